namespace InferPool.Onnx;

/// <summary>How a model takes batches.</summary>
public enum BatchingSupport
{
    /// <summary>The model's batch dimension is symbolic: any batch size works as it is.</summary>
    Native = 0,

    /// <summary>The batch dimension was fixed at 1; the graph was rewritten to a symbolic one and checked to give the same numbers.</summary>
    Rewritten = 1,

    /// <summary>The model runs one item per call: its batch dimension is fixed and rewriting it changed the results (or was impossible).</summary>
    SingleItem = 2,
}
