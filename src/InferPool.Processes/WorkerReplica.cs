using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using InferPool.Devices;
using InferPool.Replicas;
using InferPool.Results;
using Microsoft.Extensions.Logging;

namespace InferPool.Processes;

/// <summary>
/// One worker process: started and greeted in <see cref="StartAsync"/>, sent one batch at a time, killed when
/// disposed. A stdout line that is not a protocol message (a library's banner, a stray print) is logged as a
/// warning and skipped; anything else outside the protocol (exiting, a malformed message, a wrong reply) is a
/// <see cref="ReplicaFaultException"/> that names the replica and shows the offending line.
/// </summary>
/// <remarks>
/// On Linux the worker never outlives this process: a shell started under <c>setpriv --pdeathsig TERM</c> runs it
/// in a session of its own and kills that whole session when the signal comes, which is when this process dies,
/// however it dies (SIGKILL, out of memory), and also when the worker ends, so that nothing it started lingers.
/// </remarks>
internal sealed partial class WorkerReplica : IReplica<WorkerInput, JsonElement>
{
    private const int Protocol = 1;
    private const int ShownLineLength = 200;
    private const int StderrLinesKept = 5;

    private readonly ReplicaSlot _slot;
    private readonly WorkerOptions _options;
    private readonly Process _process;
    private readonly Queue<string> _stderrTail = new();
    private readonly ILogger _logger;
    private readonly long _started = Stopwatch.GetTimestamp();
    private long _nextId;
    private int _disposed;

    private WorkerReplica(ReplicaSlot slot, WorkerOptions options, Process process, ILogger logger)
    {
        _slot = slot;
        _options = options;
        _process = process;
        _logger = logger;
    }

    /// <summary>
    /// Runs the command so that its whole process tree dies with this process, and never outlives the command
    /// itself: the shell keeps a copy of stdin for the command (a background job's stdin would otherwise be
    /// /dev/null) and runs it in a session (and so a process group) of its own. On SIGTERM, the parent-death signal
    /// setpriv arranges, it kills that group, the command's children included. When the command ends by itself it
    /// kills what the command left in its group too, then exits with the command's status: when InferPool dies, a
    /// worker that exits on its own as its stdin hangs up (the Python helper does) can end before the parent-death
    /// signal arrives, and its children must not be left behind then either.
    /// </summary>
    private const string Supervisor =
        "exec 3<&0; w=; trap '[ -n \"$w\" ] && kill -KILL -\"$w\" 2>/dev/null; exit 143' TERM; "
        + "setsid /bin/sh -c \"$1\" 0<&3 3<&- & w=$!; wait \"$w\"; s=$?; kill -KILL -\"$w\" 2>/dev/null; exit \"$s\"";

    private static readonly bool CanSupervise = OperatingSystem.IsLinux() && File.Exists("/usr/bin/setpriv") && File.Exists("/usr/bin/setsid");

    /// <summary>The worker's name from its hello.</summary>
    public string Name { get; private set; } = "";

    /// <summary>The most items the worker takes in one batch (from its hello); 0 means no limit of its own.</summary>
    public int MaxBatch { get; private set; }

    /// <summary>The worker's process id (the shell's, whose children are the worker).</summary>
    public int ProcessId => _process.Id;

    /// <summary>
    /// The process that serves this replica when it is not one of <see cref="ProcessId"/>'s descendants (its hello's
    /// <c>pid</c>: a replica forked from a pre-fork loader), or null.
    /// </summary>
    public int? ServingProcessId { get; private set; }

    public static async Task<WorkerReplica> StartAsync(ReplicaSlot slot, WorkerOptions options, string pool, ILogger logger, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(CanSupervise ? "/usr/bin/setpriv" : "/bin/sh")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = new UTF8Encoding(false),
            StandardErrorEncoding = new UTF8Encoding(false),
            StandardInputEncoding = new UTF8Encoding(false),
            WorkingDirectory = options.WorkingDirectory ?? Environment.CurrentDirectory,
        };
        if (CanSupervise)
        {
            foreach (var arg in new[] { "--pdeathsig", "TERM", "--", "/usr/bin/setsid", "/bin/sh", "-c", Supervisor, "inferpool-worker", options.Command })
            {
                start.ArgumentList.Add(arg);
            }
        }
        else
        {
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add(options.Command);
        }

        foreach (var (name, value) in options.Environment)
        {
            start.Environment[name] = value;
        }

        start.Environment["INFERPOOL_DEVICE"] = slot.Device.ToString();
        start.Environment["INFERPOOL_REPLICA"] = slot.Name;
        start.Environment["INFERPOOL_POOL"] = pool;
        if (options.Prefork)
        {
            start.Environment["INFERPOOL_PREFORK"] = "1";
        }

        // cuda:N is NVML's (PCI bus) numbering; make CUDA agree before it picks device N.
        start.Environment["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID";
        start.Environment["CUDA_VISIBLE_DEVICES"] = slot.Device.IsGpu
            ? GpuNumbering.WorkerVisibleDevices(slot.Device, options.Gpus, Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES"))
            : "";

        var process = new Process { StartInfo = start };
        var replica = new WorkerReplica(slot, options, process, logger);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }

            lock (replica._stderrTail)
            {
                replica._stderrTail.Enqueue(e.Data);
                while (replica._stderrTail.Count > StderrLinesKept)
                {
                    replica._stderrTail.Dequeue();
                }
            }

            LogWorkerLine(logger, slot.Name, e.Data);
        };

        try
        {
            if (!await ProcessLauncher.StartAsync(process).ConfigureAwait(false))
            {
                throw new InvalidOperationException($"The worker for {slot} could not be started: {options.Command}");
            }

            process.BeginErrorReadLine();
            string? hello;
            try
            {
                hello = await replica.ReadMessageAsync(cancellationToken).AsTask().WaitAsync(options.StartTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                var ran = Stopwatch.GetElapsedTime(replica._started);
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"The worker for {slot} did not say hello within the start timeout of {options.StartTimeout.TotalSeconds:0.#} s (it ran {ran.TotalSeconds:0.#} s; {options.Command}).{replica.StderrTail()}"));
            }

            replica.Greet(hello);
            return replica;
        }
        catch
        {
            await replica.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask<IReadOnlyList<Outcome<JsonElement>>> InferAsync(IReadOnlyList<WorkerInput> inputs, CancellationToken cancellationToken = default)
    {
        if (MaxBatch <= 0 || inputs.Count <= MaxBatch)
        {
            return await SendAsync(inputs, cancellationToken).ConfigureAwait(false);
        }

        // The pool's batch is larger than the worker takes: send it in the worker's own batch size.
        var outcomes = new List<Outcome<JsonElement>>(inputs.Count);
        for (var start = 0; start < inputs.Count; start += MaxBatch)
        {
            var chunk = inputs.Skip(start).Take(MaxBatch).ToArray();
            outcomes.AddRange(await SendAsync(chunk, cancellationToken).ConfigureAwait(false));
        }

        return outcomes;
    }

    private async ValueTask<IReadOnlyList<Outcome<JsonElement>>> SendAsync(IReadOnlyList<WorkerInput> inputs, CancellationToken cancellationToken)
    {
        var id = ++_nextId;
        var request = Request(id, inputs);
        try
        {
            await _process.StandardInput.WriteLineAsync(request.AsMemory(), cancellationToken).ConfigureAwait(false);
            await _process.StandardInput.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IOException ex)
        {
            throw new ReplicaFaultException($"Worker {_slot} stopped reading its input{ExitText()}.{StderrTail()}", ex);
        }

        var line = await ReadMessageAsync(cancellationToken).ConfigureAwait(false)
            ?? throw new ReplicaFaultException($"Worker {_slot} closed its output{ExitText()} while working on a batch of {inputs.Count}.{StderrTail()}");
        return Parse(line, id, inputs.Count);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            if (!HasExited())
            {
                try
                {
                    await _process.StandardInput.WriteLineAsync("{\"type\":\"shutdown\"}").ConfigureAwait(false);
                    _process.StandardInput.Close();
                }
                catch (IOException)
                {
                    // Already gone or not reading: it is killed below if it does not exit.
                }

                try
                {
                    await _process.WaitForExitAsync().WaitAsync(_options.ShutdownTimeout).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    _process.Kill(entireProcessTree: true);
                    await _process.WaitForExitAsync().ConfigureAwait(false);
                }
            }
        }
        catch (InvalidOperationException)
        {
            // The process never started: nothing to stop.
        }
        finally
        {
            _process.Dispose();
        }
    }

    private void Greet(string? line)
    {
        if (line is null)
        {
            throw new InvalidOperationException($"The worker for {_slot} exited before saying hello{ExitText()} ({_options.Command}).{StderrTail()}");
        }

        try
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("type", out var type) || type.GetString() != "hello")
            {
                throw new InvalidOperationException($"The worker for {_slot} began with something other than a hello: '{Shown(line)}'.");
            }

            var protocol = root.TryGetProperty("protocol", out var p) && p.TryGetInt32(out var v) ? v : 0;
            if (protocol != Protocol)
            {
                throw new InvalidOperationException($"The worker for {_slot} speaks protocol {protocol}; this InferPool speaks {Protocol}.");
            }

            Name = root.TryGetProperty("name", out var name) ? name.GetString() ?? "" : "";
            MaxBatch = root.TryGetProperty("max_batch", out var most) && most.TryGetInt32(out var m) && m > 0 ? m : 0;
            ServingProcessId = root.TryGetProperty("pid", out var pid) && pid.TryGetInt32(out var id) && id > 0 ? id : null;
        }
        catch (JsonException)
        {
            throw new InvalidOperationException($"The worker for {_slot} began with a line that is not JSON: '{Shown(line)}'.{StderrTail()}");
        }
    }

    /// <summary>
    /// The next protocol message on the worker's stdout, or null at its end. A line that does not start like one
    /// (<c>{"type"</c>) is noise a library or a stray print wrote: it goes to the log, with the replica's name, and
    /// reading goes on.
    /// </summary>
    private async ValueTask<string?> ReadMessageAsync(CancellationToken cancellationToken)
    {
        while (await _process.StandardOutput.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
        {
            if (line.AsSpan().TrimStart().StartsWith("{\"type\"", StringComparison.Ordinal))
            {
                return line;
            }

            lock (_stderrTail)
            {
                _stderrTail.Enqueue($"(stdout) {line}");
                while (_stderrTail.Count > StderrLinesKept)
                {
                    _stderrTail.Dequeue();
                }
            }

            LogStdoutNoise(_logger, _slot.Name, Shown(line));
        }

        return null;
    }

    private static string Request(long id, IReadOnlyList<WorkerInput> inputs)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("type", "batch");
            writer.WriteNumber("id", id);
            writer.WriteStartArray("items");
            foreach (var input in inputs)
            {
                writer.WriteStartObject();
                writer.WriteString("key", input.Key);
                writer.WritePropertyName("input");
                input.Input.WriteTo(writer);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private Outcome<JsonElement>[] Parse(string line, long id, int count)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException)
        {
            throw new ReplicaFaultException($"Worker {_slot} wrote a protocol message that is not valid JSON: '{Shown(line)}'.");
        }

        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("type", out var kind) && kind.GetString() == "error"
                && root.TryGetProperty("id", out var errorId) && errorId.TryGetInt64(out var failed) && failed == id)
            {
                throw BatchError(root, count);
            }

            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("type", out var type) || type.GetString() != "result"
                || !root.TryGetProperty("id", out var replyId) || !replyId.TryGetInt64(out var got) || got != id
                || !root.TryGetProperty("results", out var results) || results.ValueKind != JsonValueKind.Array)
            {
                throw new ReplicaFaultException($"Worker {_slot} broke the protocol: expected the result of batch {id}, got '{Shown(line)}'.");
            }

            if (results.GetArrayLength() != count)
            {
                throw new ReplicaFaultException($"Worker {_slot} returned {results.GetArrayLength()} results for a batch of {count}: '{Shown(line)}'.");
            }

            var outcomes = new Outcome<JsonElement>[count];
            var i = 0;
            foreach (var result in results.EnumerateArray())
            {
                var ok = result.ValueKind == JsonValueKind.Object && result.TryGetProperty("ok", out var okValue) && okValue.ValueKind == JsonValueKind.True;
                if (ok && result.TryGetProperty("output", out var output))
                {
                    outcomes[i++] = Outcome.Success(output.Clone());
                    continue;
                }

                var errorType = result.ValueKind == JsonValueKind.Object && result.TryGetProperty("error_type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "WorkerError";
                var message = result.ValueKind == JsonValueKind.Object && result.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.String ? e.GetString()! : $"the worker reported no output: {Shown(result.GetRawText())}";
                outcomes[i++] = Outcome.Failure<JsonElement>(new ItemError(errorType, message, FailureStage.Infer));
            }

            return outcomes;
        }
    }

    /// <summary>
    /// The worker said the batch as a whole failed (protocol <c>error</c> reply): out of device memory is the pool's
    /// signal to halve the batch; anything else means the worker cannot go on with this batch and is rebuilt.
    /// </summary>
    private Exception BatchError(JsonElement reply, int count)
    {
        var type = reply.TryGetProperty("error_type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "WorkerError";
        var message = reply.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.String ? e.GetString()! : "";
        var text = $"Worker {_slot} failed a batch of {count}: {type}: {Shown(message)}";
        return type == "OutOfMemoryError" || InferencePoolOptions.IsOutOfDeviceMemory(message)
            ? new DeviceOutOfMemoryException(text)
            : new ReplicaFaultException(text);
    }

    private bool HasExited()
    {
        try
        {
            return _process.HasExited;
        }
        catch (InvalidOperationException)
        {
            return true;
        }
    }

    private string ExitText()
    {
        if (!_process.WaitForExit(TimeSpan.FromSeconds(1)))
        {
            return "";
        }

        var code = _process.ExitCode;
        return code > 128 ? $" (killed by signal {code - 128})" : $" (exit code {code})";
    }

    private string StderrTail()
    {
        lock (_stderrTail)
        {
            return _stderrTail.Count == 0 ? "" : $" Its last lines on stderr: {string.Join(" | ", _stderrTail.Select(Shown))}";
        }
    }

    private static string Shown(string line) => line.Length <= ShownLineLength ? line : line[..ShownLineLength] + "…";

    [LoggerMessage(Level = LogLevel.Warning, Message = "[{Replica}] wrote to stdout, which is for protocol messages only (print to stderr): {Line}")]
    private static partial void LogStdoutNoise(ILogger logger, string replica, string line);

    [LoggerMessage(Level = LogLevel.Information, Message = "[{Replica}] {Line}")]
    private static partial void LogWorkerLine(ILogger logger, string replica, string line);
}
