using System.ComponentModel;
using InferPool.Images;
using InferPool.Jobs;
using Spectre.Console;
using Spectre.Console.Cli;

namespace InferPool.Cli.Commands;

/// <summary>The arguments of <c>inferpool run</c>.</summary>
internal sealed class RunSettings : CommandSettings
{
    [CommandArgument(0, "[INPUT]")]
    [Description("A folder of images (recursive), a list file of paths, or a .jsonl file of records (a path, or named tensors in \"inputs\"). For a text model: a file with one text per line, or a .jsonl file of records with a text field. Default: the sample images (or, for a text model, the sample texts) shipped with the tool.")]
    public string? Input { get; init; }

    [CommandOption("-o|--output <DIR>")]
    [Description("Output folder for the parts.")]
    [DefaultValue("inferpool-out")]
    public string Output { get; init; } = "inferpool-out";

    [CommandOption("--model <MODEL>")]
    [Description("'resnet18' (built-in image model), 'minilm' (built-in text embeddings, all-MiniLM-L6-v2) or a path to an .onnx file. Default: resnet18")]
    public string? Model { get; init; }

    [CommandOption("--tokenizer <FILE>")]
    [Description("Makes --model a text model: its vocab.txt or tokenizer.json (BERT WordPiece). Inputs become texts. Default for minilm: its own; for a model file: vocab.txt next to it when --pooling or --max-tokens is given.")]
    public string? Tokenizer { get; init; }

    [CommandOption("--pooling <HOW>")]
    [Description("For a text model: 'mean' (over the attention mask, L2-normalised; default), 'cls' ([CLS] token, L2-normalised) or 'none' (the model's outputs, each cut to the text's tokens).")]
    public string? Pooling { get; init; }

    [CommandOption("--max-tokens <N>")]
    [Description("For a text model: the most tokens per text; longer texts are cut and counted. Default: 256 for minilm, 512 otherwise.")]
    public int? MaxTokens { get; init; }

    [CommandOption("--max-batch-tokens <N>")]
    [Description("For a text model (or a model padded with --pad): the most tokens in one model call, rows × the longest item in it. Each batch is sorted by length and cut at this many. Default: 4096.")]
    public int? MaxBatchTokens { get; init; }

    [CommandOption("--pad <INPUT=VALUE>")]
    [Description("For a model of any inputs: the value that pads INPUT, so that items of different lengths (a symbolic dimension other than the batch) share calls. Repeat for each input. Without it such items run in groups of equal shape.")]
    public string[] Pad { get; init; } = [];

    [CommandOption("--column <NAME>")]
    [Description("For a text model: the field (.jsonl) or column (.csv, .parquet) that holds each text; default text. For a table input and another model: INPUT=COL1,COL2,… reads model input INPUT from those columns (one column: its value; several: one vector); repeat per input. Default: a one-input model reads every column but the key; otherwise each input reads the column of its name.")]
    public string[] Column { get; init; } = [];

    [CommandOption("--key <COLUMN>")]
    [Description("For a table input (.csv, .tsv, .parquet): the column that holds each row's key. Default: the row number, from 1.")]
    public string? Key { get; init; }

    [CommandOption("--worker <COMMAND>")]
    [Description("Run the items through worker processes started with this shell command (any language; docs/worker-protocol.md) instead of an ONNX model: one process per replica, each sent absolute paths or whole JSONL records.")]
    public string? Worker { get; init; }

    [CommandOption("--worker-output <KIND>")]
    [Description("With --worker: 'vector' stores each output (numbers, nested arrays flattened) as a float list in column 'output'; 'json' keeps any JSON as text.")]
    [DefaultValue("vector")]
    public string WorkerOutput { get; init; } = "vector";

    [CommandOption("--start-timeout <SECONDS>")]
    [Description("With --worker: how long a worker may take to load its model and say hello.")]
    [DefaultValue(120.0)]
    public double StartTimeoutSeconds { get; init; } = 120;

    [CommandOption("--prefork")]
    [Description("With --worker, on the CPU: load the model once and fork the replicas from that process, sharing its memory (Python helper workers; docs/worker-protocol.md).")]
    public bool Prefork { get; init; }

    [CommandOption("--devices <DEVICES>")]
    [Description("auto, cpu, cuda, cuda:0,1, or per-device counts like cuda:0=2,cpu.")]
    [DefaultValue("auto")]
    public string Devices { get; init; } = "auto";

    [CommandOption("--replicas <N>")]
    [Description("Replicas per device. Default: on the CPU, one per core (one per two cores above 4 cores); 2 per GPU")]
    public int? Replicas { get; init; }

    [CommandOption("--config <FILE>")]
    [Description("A configuration saved by 'inferpool tune' (devices, threads, batch). Default: inferpool.tuned.json in the output folder, else the one 'tune' saved beside the model. The command line wins over it.")]
    public string? Config { get; init; }

    [CommandOption("--cluster <CONNECTION>")]
    [Description("Submit the job to a cluster of 'inferpool node' processes sharing this PostgreSQL database, and follow it; results go to the table inferpool_results. INPUT and the model must be readable by every node.")]
    public string? Cluster { get; init; }

    [CommandOption("--job <ID>")]
    [Description("With --cluster: the job's id. Default: job-<time>-<random>")]
    public string? Job { get; init; }

    [CommandOption("--shard-size <N>")]
    [Description("With --cluster: items per shard (the unit a node leases, runs and commits).")]
    [DefaultValue(100)]
    public int ShardSize { get; init; } = 100;

    [CommandOption("--lease <SECONDS>")]
    [Description("With --cluster: how long a shard lease lasts without renewal before another node may take the shard.")]
    [DefaultValue(30)]
    public int LeaseSeconds { get; init; } = 30;

    [CommandOption("--detach")]
    [Description("With --cluster: submit and return without following the job.")]
    public bool Detach { get; init; }

    [CommandOption("--threads <N>")]
    [Description("Threads per CPU replica (ONNX Runtime intra-op threads; OMP_NUM_THREADS for a worker). Default: cores / CPU replicas")]
    public int? Threads { get; init; }

    [CommandOption("--batch <N>")]
    [Description("Most items per model call. Default: 1 on the CPU, 32 with a GPU (1 if the model cannot batch)")]
    public int? Batch { get; init; }

    [CommandOption("--format <FORMAT>")]
    [Description("parquet or jsonl.")]
    [DefaultValue("parquet")]
    public string Format { get; init; } = "parquet";

    [CommandOption("--prepare-workers <N>")]
    [Description("The most items prepared at once (images decoded, texts tokenized); as many run as keep the replicas fed. Default: the core count")]
    public int? PrepareWorkers { get; init; }

    [CommandOption("--batch-timeout <SECONDS>")]
    [Description("A model call taking longer is treated as hung: the replica is rebuilt and the batch retried.")]
    [DefaultValue(JobDefaults.BatchTimeoutSeconds)]
    public double BatchTimeoutSeconds { get; init; } = JobDefaults.BatchTimeoutSeconds;

    [CommandOption("--drain-timeout <SECONDS>")]
    [Description("After the first Ctrl+C or SIGTERM, how long the items in flight may take to finish and be committed before the run stops at once.")]
    [DefaultValue(JobDefaults.DrainTimeoutSeconds)]
    public double DrainTimeoutSeconds { get; init; } = JobDefaults.DrainTimeoutSeconds;

    [CommandOption("--gpu-headroom <FRACTION>")]
    [Description("Share of each GPU's memory to keep free: after the first replica on a GPU has run, the replicas there are capped to what fits.")]
    [DefaultValue(JobDefaults.GpuHeadroom)]
    public double GpuHeadroom { get; init; } = JobDefaults.GpuHeadroom;

    [CommandOption("--max-pixels <N>")]
    [Description("Images with more pixels are refused from their header, before decoding.")]
    [DefaultValue(ImagePreprocessor.DefaultMaxPixels)]
    public long MaxPixels { get; init; } = ImagePreprocessor.DefaultMaxPixels;

    [CommandOption("--part-rows <N>")]
    [Description("Rows per output part.")]
    [DefaultValue(JobDefaults.RowsPerPart)]
    public int PartRows { get; init; } = JobDefaults.RowsPerPart;

    [CommandOption("--resume")]
    [Description("Require an unfinished job in the output folder to resume (resuming is already the default when model, input and format match).")]
    public bool Resume { get; init; }

    [CommandOption("--force")]
    [Description("Start over: remove the job journal and parts in the output folder first.")]
    public bool Force { get; init; }

    [CommandOption("--allow-duplicate-keys")]
    [Description("Run every item even when keys repeat, keying the later ones key#2, key#3, …. Without it a list file with a repeated line is refused before any work, and a repeated JSONL key fails that item.")]
    public bool AllowDuplicateKeys { get; init; }

    [CommandOption("--fail-fast")]
    [Description("Stop taking input at the first failed item; what is in flight finishes and is committed.")]
    public bool FailFast { get; init; }

    [CommandOption("-q|--quiet")]
    [Description("No progress display.")]
    public bool Quiet { get; init; }

    [CommandOption("-v|--verbose")]
    [Description("Log more: replica starts, and every line workers write to stderr (prefixed with the replica).")]
    public bool Verbose { get; init; }

    public override ValidationResult Validate()
    {
        if (Replicas is < 1)
        {
            return ValidationResult.Error($"--replicas is {Replicas}; it must be at least 1.");
        }

        if (Threads is < 1)
        {
            return ValidationResult.Error($"--threads is {Threads}; it must be at least 1.");
        }

        if (Batch is < 1)
        {
            return ValidationResult.Error($"--batch is {Batch}; it must be at least 1.");
        }

        if (PrepareWorkers is < 1)
        {
            return ValidationResult.Error($"--prepare-workers is {PrepareWorkers}; it must be at least 1.");
        }

        if (BatchTimeoutSeconds <= 0)
        {
            return ValidationResult.Error($"--batch-timeout is {BatchTimeoutSeconds}; it must be more than 0 seconds.");
        }

        if (StartTimeoutSeconds <= 0)
        {
            return ValidationResult.Error($"--start-timeout is {StartTimeoutSeconds}; it must be more than 0 seconds.");
        }

        if (DrainTimeoutSeconds <= 0)
        {
            return ValidationResult.Error($"--drain-timeout is {DrainTimeoutSeconds}; it must be more than 0 seconds.");
        }

        if (GpuHeadroom is < 0 or >= 1)
        {
            return ValidationResult.Error($"--gpu-headroom is {GpuHeadroom}; it must be from 0 to below 1 (0.1 keeps 10% free).");
        }

        if (MaxPixels < 1 || PartRows < 1)
        {
            return ValidationResult.Error("--max-pixels and --part-rows must be at least 1.");
        }

        if (Pooling is not (null or "mean" or "cls" or "none"))
        {
            return ValidationResult.Error($"--pooling '{Pooling}' is not supported: use mean, cls or none.");
        }

        if (MaxTokens is < 2 || MaxBatchTokens is < 1)
        {
            return ValidationResult.Error("--max-tokens must be at least 2 and --max-batch-tokens at least 1.");
        }

        if (Pad.FirstOrDefault(p => !PadOption.TryParse(p, out _, out _)) is { } badPad)
        {
            return ValidationResult.Error($"--pad '{badPad}' is not INPUT=VALUE with a number, e.g. --pad input_ids=0.");
        }

        if (IsText && Column.Length > 1 || (IsText && Column.Any(c => c.Contains('=', StringComparison.Ordinal))))
        {
            return ValidationResult.Error("For a text model --column names the one field or column that holds the text, e.g. --column body.");
        }

        if (!IsText && Column.FirstOrDefault(c => c.IndexOf('=', StringComparison.Ordinal) is < 1 || c.EndsWith('=')) is { } badColumn)
        {
            return ValidationResult.Error($"--column '{badColumn}' is not INPUT=COLUMN[,COLUMN…], e.g. --column float_input=a,b,c.");
        }

        if (Worker is not null && (Model is not null || Tokenizer is not null))
        {
            return ValidationResult.Error("--worker contradicts --model and --tokenizer: a worker loads its own model.");
        }

        if (Prefork && Worker is null)
        {
            return ValidationResult.Error("--prefork is for --worker runs: it shares one worker process's loaded model among the CPU replicas.");
        }

        if (Worker is not null && string.IsNullOrWhiteSpace(Worker))
        {
            return ValidationResult.Error("--worker needs a command, e.g. --worker \"python3 my_infer.py\".");
        }

        if (WorkerOutput is not ("vector" or "json"))
        {
            return ValidationResult.Error($"--worker-output '{WorkerOutput}' is not supported: use vector or json.");
        }

        if (ShardSize < 1 || LeaseSeconds < 2)
        {
            return ValidationResult.Error("--shard-size must be at least 1 and --lease at least 2 seconds.");
        }

        if (Resume && Force)
        {
            return ValidationResult.Error("--resume and --force contradict each other: choose one.");
        }

        if (Format is not ("parquet" or "jsonl"))
        {
            return ValidationResult.Error($"--format '{Format}' is not supported: use parquet or jsonl.");
        }

        return DevicesOption.Validate(Devices);
    }

    /// <summary>The field or column that holds each text, for a text model.</summary>
    public string TextColumn => Column.Length == 1 ? Column[0] : "text";

    /// <summary>The columns given per model input (<c>--column INPUT=A,B</c>).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> InputColumns => IsText
        ? new Dictionary<string, IReadOnlyList<string>>()
        : Column.Select(c => c.Split('=', 2)).ToDictionary(p => p[0], p => (IReadOnlyList<string>)[.. p[1].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)], StringComparer.Ordinal);

    /// <summary>True when the settings ask for a text model: minilm, or a tokenizer or pooling given.</summary>
    public bool IsText => Worker is null && (Jobs.Engines.TextEngine.IsBuiltIn(Model) || Tokenizer is not null || Pooling is not null || MaxTokens is not null);
}

/// <summary>Parses <c>--pad INPUT=VALUE</c>.</summary>
internal static class PadOption
{
    public static bool TryParse(string text, out string input, out double value)
    {
        var at = text.LastIndexOf('=');
        input = at > 0 ? text[..at] : "";
        value = 0;
        return at > 0 && double.TryParse(text[(at + 1)..], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out value);
    }
}
