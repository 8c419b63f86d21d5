namespace PgBackup.Module.Tests;

/// <summary>Polling for what servers do in the background (a standby catching up, a receiver stopping), with a deadline.</summary>
internal static class Wait
{
    public static void Until(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out waiting until " + what);
            Thread.Sleep(100);
        }
    }
}
