// The README's library example, compiled by the solution build so it can't rot.
using InferPool;
using InferPool.Devices;

var inputs = Enumerable.Range(1, 1000).Select(i => $"item-{i}");

// README example: begin
var options = new InferencePoolOptions
{
    Replicas = DeviceSpec.Parse("auto").Resolve(DeviceInventory.HostOnly, defaultReplicas: 2),
    MaxBatchSize = 16,
};
await foreach (var r in InferencePool.RunAsync(inputs, slot => new MyModel(slot.Device),
                   (model, batch, ct) => model.Infer(batch), options))
{
    Console.WriteLine(r.IsSuccess ? $"{r.Item} -> {r.Value} on {r.Replica}" : $"{r.Item} failed: {r.Error}");
}
// README example: end

/// <summary>Stands in for any model: one instance per replica, built on its device.</summary>
internal sealed class MyModel(Device device)
{
    public Device Device { get; } = device;

    public string[] Infer(IReadOnlyList<string> batch) => [.. batch.Select(s => $"{s.Length} chars ({Device})")];
}
