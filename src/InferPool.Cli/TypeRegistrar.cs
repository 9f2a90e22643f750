using Microsoft.Extensions.DependencyInjection;
using Spectre.Console.Cli;

namespace InferPool.Cli;

/// <summary>Spectre.Console.Cli's type registrar over Microsoft.Extensions.DependencyInjection: commands get their services by constructor.</summary>
internal sealed class TypeRegistrar(IServiceCollection services) : ITypeRegistrar
{
    public ITypeResolver Build() => new TypeResolver(services.BuildServiceProvider());

    public void Register(Type service, Type implementation) => services.AddSingleton(service, implementation);

    public void RegisterInstance(Type service, object implementation) => services.AddSingleton(service, implementation);

    public void RegisterLazy(Type service, Func<object> factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        services.AddSingleton(service, _ => factory());
    }

    private sealed class TypeResolver(ServiceProvider provider) : ITypeResolver, IDisposable
    {
        public object? Resolve(Type? type) => type is null ? null : provider.GetService(type);

        public void Dispose() => provider.Dispose();
    }
}

/// <summary>Where a command's errors and warnings go (standard error), as a service commands take.</summary>
/// <param name="Writer">The writer.</param>
internal sealed record ErrorOutput(TextWriter Writer)
{
    /// <summary>Writes <c>inferpool: MESSAGE</c> and returns the exit code for a job that could not run.</summary>
    public int Fail(string message)
    {
        Writer.WriteLine($"inferpool: {message}");
        return ExitCodes.JobFailed;
    }
}
