namespace InferPool.TestKit;

/// <summary>
/// Skips a test whose outside requirement (PostgreSQL, torch, pip) is missing, with the reason; but under <c>CI=true</c>,
/// where <c>.ci/run</c> installs those, a missing requirement fails the test, so that a failed install cannot turn
/// the suite green with skips.
/// </summary>
internal static class Requirement
{
    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    /// <summary>Skips (or, in CI, fails) when <paramref name="missing"/> says what is missing; does nothing when it is null.</summary>
    public static void Needs(string? missing)
    {
        if (missing is null)
        {
            return;
        }

        Xunit.Assert.False(InCi, $"CI installs what this test needs, yet: {missing}");
        Xunit.Skip.If(true, missing);
    }
}
