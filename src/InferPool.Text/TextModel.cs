using InferPool.Onnx;
using InferPool.Onnx.Tensors;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferPool.Text;

/// <summary>
/// A BERT-family ONNX model with its tokenizer: texts become <c>input_ids</c>, <c>attention_mask</c> and (when the
/// model has it) <c>token_type_ids</c>, one item per text without padding (padding happens per call, to the longest
/// text in it); the model's token vectors become one embedding per text by <see cref="TextPooling"/>.
/// </summary>
public sealed class TextModel
{
    private readonly int[] _roles;

    private TextModel(OnnxModel model, WordPieceTokenizer tokenizer, TextPooling pooling, int maxTokens, int[] roles, int tokenOutput)
    {
        Model = model;
        Tokenizer = tokenizer;
        Pooling = pooling;
        MaxTokens = maxTokens;
        _roles = roles;
        TokenOutput = tokenOutput;
        Batching = new TensorBatching
        {
            PadValues = model.Inputs.ToDictionary(i => i.Name, _ => 0.0, StringComparer.Ordinal),
            Reducers = pooling == TextPooling.None
                ? new Dictionary<string, FloatRowsReducer>(StringComparer.Ordinal)
                : new Dictionary<string, FloatRowsReducer>(StringComparer.Ordinal) { [model.Outputs[tokenOutput].Name] = Reduce },
        };
    }

    private enum Role
    {
        Ids = 0,
        Mask = 1,
        TypeIds = 2,
    }

    /// <summary>The model.</summary>
    public OnnxModel Model { get; }

    /// <summary>The tokenizer.</summary>
    public WordPieceTokenizer Tokenizer { get; }

    /// <summary>How token vectors become one vector per text.</summary>
    public TextPooling Pooling { get; }

    /// <summary>The most tokens per text, [CLS] and [SEP] included; longer texts are cut and counted.</summary>
    public int MaxTokens { get; }

    /// <summary>The index of the output that holds the token vectors, [batch, sequence, hidden]; pooled unless <see cref="TextPooling.None"/>.</summary>
    public int TokenOutput { get; }

    /// <summary>The embedding size: the token output's last dimension.</summary>
    public int Dimensions => (int)Model.Outputs[TokenOutput].Shape[^1];

    /// <summary>
    /// Pads every input with 0 (token ids, masks and token types), so texts of different lengths share calls, and (unless
    /// <see cref="TextPooling.None"/>) pools each text's token vectors where ONNX Runtime left them (<see cref="Reduce"/>).
    /// </summary>
    public TensorBatching Batching { get; }

    /// <summary>Binds a model to a tokenizer.</summary>
    /// <param name="model">A BERT-family model: int64 (or int32) inputs named <c>input_ids</c> and <c>attention_mask</c>, optionally <c>token_type_ids</c>, all [batch, sequence].</param>
    /// <param name="tokenizer">Its vocabulary.</param>
    /// <param name="pooling">How token vectors become one vector per text.</param>
    /// <param name="maxTokens">The most tokens per text.</param>
    /// <exception cref="NotSupportedException">The model's inputs or outputs are not those of a BERT-family encoder; the message names them.</exception>
    public static TextModel Bind(OnnxModel model, WordPieceTokenizer tokenizer, TextPooling pooling, int maxTokens)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 2);
        var roles = new int[model.Inputs.Count];
        for (var i = 0; i < roles.Length; i++)
        {
            var input = model.Inputs[i];
            roles[i] = input.Name switch
            {
                "input_ids" => (int)Role.Ids,
                "attention_mask" => (int)Role.Mask,
                "token_type_ids" => (int)Role.TypeIds,
                _ => throw new NotSupportedException($"Model '{model.Path}' input {input} is not one a text model takes (input_ids, attention_mask, token_type_ids)."),
            };
            if (input.ElementType is not (TensorElementType.Int64 or TensorElementType.Int32) || input.Shape.Count != 2 || input.Shape[1] >= 0)
            {
                throw new NotSupportedException($"Model '{model.Path}' input {input} is not int64 or int32 [batch, sequence] with a symbolic sequence length.");
            }
        }

        if (!roles.Contains((int)Role.Ids))
        {
            throw new NotSupportedException($"Model '{model.Path}' has no input_ids input; its inputs are {string.Join(", ", model.Inputs)}.");
        }

        var tokenOutput = -1;
        for (var o = 0; o < model.Outputs.Count && tokenOutput < 0; o++)
        {
            var shape = model.Outputs[o].Shape;
            if (model.Outputs[o].ElementType is TensorElementType.Float or TensorElementType.Float16 && shape.Count == 3 && shape[2] > 0)
            {
                tokenOutput = o;
            }
        }

        if (tokenOutput < 0 && pooling != TextPooling.None)
        {
            throw new NotSupportedException($"Model '{model.Path}' has no output of token vectors [batch, sequence, hidden] to pool; its outputs are {string.Join(", ", model.Outputs)}. Use no pooling to write them as they are.");
        }

        return new TextModel(model, tokenizer, pooling, maxTokens, roles, Math.Max(0, tokenOutput));
    }

    /// <summary>A text as the model's input: one item, each input a vector of the text's token count.</summary>
    /// <param name="text">The text.</param>
    /// <exception cref="InvalidDataException">The text is empty or only white space.</exception>
    public TensorItem Prepare(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new InvalidDataException(text.Length == 0 ? "The text is empty." : "The text is only white space.");
        }

        var tokens = Tokenizer.Tokenize(text, MaxTokens);
        var length = tokens.Ids.Length;
        var inputs = new TensorData[_roles.Length];
        for (var i = 0; i < inputs.Length; i++)
        {
            var values = (Role)_roles[i] switch
            {
                Role.Ids => tokens.Ids,
                Role.Mask => Ones(length),
                _ => new long[length],
            };
            inputs[i] = Model.Inputs[i].ElementType == TensorElementType.Int32
                ? TensorData.Create(Array.ConvertAll(values, v => (int)v), length)
                : TensorData.Create(values, length);
        }

        return new TensorItem(inputs) { Truncated = tokens.Truncated };
    }

    /// <summary>The text's embedding from its outputs: the token vectors pooled and L2-normalised.</summary>
    /// <param name="outputs">The item's outputs (each cut to its own tokens).</param>
    /// <exception cref="InvalidOperationException">The pooling is <see cref="TextPooling.None"/>.</exception>
    public float[] Embed(TensorOutputs outputs)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        if (Pooling == TextPooling.None)
        {
            throw new InvalidOperationException("No pooling: the outputs are written as they are.");
        }

        var tokens = outputs.Values[TokenOutput];
        var values = tokens.Values as float[] ?? tokens.ToFloats();

        // Already pooled in the session (Batching's reducer), or the text's token vectors [count, hidden].
        return tokens.Shape.Length == 1 ? values : Reduce(values, (int)tokens.Shape[0], (int)tokens.Shape[1]);
    }

    /// <summary>One text's embedding from its token vectors: their mean (or the [CLS] vector), L2-normalised.</summary>
    /// <param name="tokens">The text's token vectors, end to end (its own tokens only, no padding).</param>
    /// <param name="count">How many tokens.</param>
    /// <param name="hidden">Values per token.</param>
    public float[] Reduce(ReadOnlySpan<float> tokens, int count, int hidden)
    {
        var embedding = new float[hidden];
        if (Pooling == TextPooling.Cls)
        {
            tokens[..hidden].CopyTo(embedding);
        }
        else
        {
            // Every token of the item is a real one (the mask is 1 wherever the item has a token), so the mean over
            // the mask is the mean over its rows.
            for (var t = 0; t < count; t++)
            {
                System.Numerics.Tensors.TensorPrimitives.Add(embedding, tokens.Slice(t * hidden, hidden), embedding);
            }

            System.Numerics.Tensors.TensorPrimitives.Divide(embedding, Math.Max(1, count), embedding);
        }

        var norm = System.Numerics.Tensors.TensorPrimitives.Norm(embedding);
        if (norm > 1e-12f)
        {
            System.Numerics.Tensors.TensorPrimitives.Divide(embedding, norm, embedding);
        }

        return embedding;
    }

    private static long[] Ones(int length)
    {
        var ones = new long[length];
        Array.Fill(ones, 1L);
        return ones;
    }
}
