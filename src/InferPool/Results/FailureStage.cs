namespace InferPool.Results;

/// <summary>Where in the pipeline an item failed.</summary>
public enum FailureStage
{
    /// <summary>The prepare transform (decode, resize, …) threw for this item.</summary>
    Prepare = 0,

    /// <summary>The model threw for this item alone (after its batch was split to find it), or the replica reported an error for it.</summary>
    Infer = 1,

    /// <summary>Every attempt at this item broke or timed out the replica that ran it; the item is poison.</summary>
    Replica = 2,
}
