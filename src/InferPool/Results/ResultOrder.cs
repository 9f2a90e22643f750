namespace InferPool.Results;

/// <summary>The order in which a job's results are streamed.</summary>
public enum ResultOrder
{
    /// <summary>
    /// In input order. Results that finish early wait in a reorder window bounded by
    /// <see cref="InferencePoolOptions.MaxInFlight"/>; a slow item holds back later ones, never memory.
    /// </summary>
    Input = 0,

    /// <summary>As soon as each batch completes; the fastest, and what a sink that records keys needs.</summary>
    Completion = 1,
}
