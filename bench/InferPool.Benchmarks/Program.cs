using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/InferPool.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
