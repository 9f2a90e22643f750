using Microsoft.Extensions.Logging;

namespace InferPool.Cli;

/// <summary>Writes warnings and errors from the pool to standard error, one line each.</summary>
internal sealed class ConsoleLogger(TextWriter writer, LogLevel minimum) : ILogger
{
    private readonly Lock _lock = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel))
        {
            return;
        }

        var label = logLevel switch
        {
            LogLevel.Warning => "warning",
            LogLevel.Error or LogLevel.Critical => "error",
            _ => "info",
        };
        lock (_lock)
        {
            writer.WriteLine($"inferpool {label}: {formatter(state, exception)}");
        }
    }
}

/// <summary>Hands out <see cref="ConsoleLogger"/>s (one writer, one minimum level) to a host's logging.</summary>
internal sealed class ConsoleLoggerProvider(TextWriter writer, LogLevel minimum) : ILoggerProvider
{
    private readonly ConsoleLogger _logger = new(writer, minimum);

    public ILogger CreateLogger(string categoryName) => _logger;

    public void Dispose()
    {
    }
}
