namespace InferPool.Jobs.Inputs;

/// <summary>How the rows of a CSV or Parquet input become items.</summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>option</term><description>default</description></listheader>
/// <item><term><see cref="KeyColumn"/></term><description>null: the row number, from 1</description></item>
/// <item><term><see cref="TextColumn"/></term><description>null: the rows are not texts</description></item>
/// <item><term><see cref="RequiredColumns"/></term><description>empty</description></item>
/// </list>
/// </remarks>
public sealed record TableOptions
{
    /// <summary>The column that holds each row's key; null keys rows by their number, from 1.</summary>
    public string? KeyColumn { get; init; }

    /// <summary>The column that holds each row's text, for a text model; null when the rows are not texts.</summary>
    public string? TextColumn { get; init; }

    /// <summary>Columns the job reads (those mapped to model inputs); a missing one stops the job before it starts.</summary>
    public IReadOnlyList<string> RequiredColumns { get; init; } = [];
}
