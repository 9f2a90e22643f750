namespace InferPool.Jobs.Inputs;

/// <summary>What a job does with an item whose key an earlier item of the input already has.</summary>
public enum DuplicateKeys
{
    /// <summary>
    /// The default. A list file is checked whole before work starts, and a duplicate stops the job
    /// (<see cref="DuplicateKeyException"/>). In a streamed input (JSONL) the later item fails, with the reason, under
    /// a key made unique (<c>a#2</c>), so every key is still in the output once.
    /// </summary>
    Fail,

    /// <summary>Every item runs; a repeated key is made unique by its occurrence: <c>a</c>, <c>a#2</c>, <c>a#3</c>.</summary>
    MakeUnique,
}
