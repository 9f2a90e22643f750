namespace InferPool.Results;

/// <summary>Creates <see cref="Outcome{T}"/> values.</summary>
public static class Outcome
{
    /// <summary>A successful outcome holding <paramref name="value"/>.</summary>
    public static Outcome<T> Success<T>(T value) => Outcome<T>.Success(value);

    /// <summary>A failed outcome.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="error"/> is null.</exception>
    public static Outcome<T> Failure<T>(ItemError error) => Outcome<T>.Failure(error);
}
