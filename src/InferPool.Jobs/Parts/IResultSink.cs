namespace InferPool.Jobs.Parts;

/// <summary>
/// Where a job's rows go, in input order: a folder of parts (<see cref="PartWriter"/>), a database table, or
/// anything a program supplies. A row counts as done once the sink has committed it.
/// </summary>
public interface IResultSink
{
    /// <summary>Takes one row; the sink may commit it now or with later rows.</summary>
    /// <param name="row">The row.</param>
    /// <param name="cancellationToken">Stops the write; what was committed stays.</param>
    ValueTask AddAsync(ResultRow row, CancellationToken cancellationToken = default);

    /// <summary>Commits every row taken and not yet committed.</summary>
    /// <param name="cancellationToken">Stops the write; what was committed stays.</param>
    ValueTask CompleteAsync(CancellationToken cancellationToken = default);
}
