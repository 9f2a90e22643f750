namespace InferPool.Text;

/// <summary>How a text model's token outputs become one vector per text.</summary>
public enum TextPooling
{
    /// <summary>The mean of the token vectors over the attention mask, L2-normalised (sentence-transformers' mean pooling with its Normalize step).</summary>
    Mean = 0,

    /// <summary>The vector of the [CLS] token, L2-normalised.</summary>
    Cls = 1,

    /// <summary>No pooling: the model's outputs as they are, each cut to the text's own tokens.</summary>
    None = 2,
}
