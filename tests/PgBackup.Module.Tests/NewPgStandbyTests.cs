using System.Management.Automation;
using PgBackup.Testing;

namespace PgBackup.Module.Tests;

[Collection("module")]
public sealed class NewPgStandbyTests(ModuleFixture fx)
{
    private static void StopInstance(string dataDirectory)
    {
        var pgCtl = Path.Combine(PgTestCluster.BinDirectory, "pg_ctl");
        if (Environment.IsPrivilegedProcess) ProcessRunner.Run("runuser", ["-u", "postgres", "--", pgCtl, "stop", "-D", dataDirectory, "-m", "immediate", "-w"]);
        else ProcessRunner.Run(pgCtl, ["stop", "-D", dataDirectory, "-m", "immediate", "-w"]);
        Directory.Delete(dataDirectory, recursive: true);
    }

    [Fact]
    public void A_new_standby_streams_with_its_slot_and_shows_up_on_the_primary()
    {
        var directory = Path.Combine(fx.NewRepository(), "standby data");
        var port = FreePort.Next();
        try
        {
            var r = fx.Shell.Run("New-PgStandby -Server $s -DataDirectory $d -Port $p -Slot module_standby", ("s", fx.Server), ("d", directory), ("p", port)).AssertNoErrors();
            var status = Assert.Single(r.Output);
            Assert.Contains("PgBackup.StandbyStatus", status.TypeNames);
            Assert.Equal("streaming", status.Properties["ReceiverStatus"].Value);
            Assert.Equal(port, status.Properties["Port"].Value);
            Assert.Equal("module_standby", status.Properties["SlotName"].Value);
            Assert.True(File.Exists(Path.Combine(directory, "standby.signal")));

            fx.Cluster.Psql("create table if not exists after_standby(id int); insert into after_standby values (1);", ModuleFixture.Database);
            var links = fx.Shell.Run("Get-PgReplicationStatus -Server $s -IncludeSlots", ("s", fx.Server)).AssertNoErrors().Output;
            Assert.Contains(links, o => o.TypeNames.Contains("PgBackup.ReplicationLink") && (string?)o.Properties["SlotName"].Value == "module_standby");
            fx.Shell.Run("Wait-PgReplication -Server $s -Timeout 00:00:30", ("s", fx.Server)).AssertNoErrors();
        }
        finally
        {
            StopInstance(directory);
            fx.Cluster.Psql("select pg_drop_replication_slot('module_standby') from pg_replication_slots where slot_name = 'module_standby'");
        }
    }

    [Fact]
    public void A_non_empty_data_directory_and_a_busy_port_are_refused_and_left_alone()
    {
        var directory = fx.NewRepository();
        File.WriteAllText(Path.Combine(directory, "precious.txt"), "keep me");
        var e = fx.Shell.Run("New-PgStandby -Server $s -DataDirectory $d -Port $p", ("s", fx.Server), ("d", directory), ("p", FreePort.Next())).SingleError();
        Assert.Equal("PgBackup.TargetNotEmpty", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.ResourceExists, e.CategoryInfo.Category);
        Assert.Equal("keep me", File.ReadAllText(Path.Combine(directory, "precious.txt")));

        var busy = fx.Shell.Run("New-PgStandby -Server $s -DataDirectory $d -Port $p", ("s", fx.Server), ("d", Path.Combine(directory, "new")), ("p", fx.Cluster.Port)).SingleError();
        Assert.Equal("PgBackup.PortInUse", busy.FullyQualifiedErrorId.Split(',')[0]);
        Assert.False(Directory.Exists(Path.Combine(directory, "new")));
    }

    [Fact]
    public void WhatIf_creates_nothing()
    {
        var directory = Path.Combine(fx.NewRepository(), "never");
        fx.Shell.Run("New-PgStandby -Server $s -DataDirectory $d -Port $p -WhatIf", ("s", fx.Server), ("d", directory), ("p", FreePort.Next())).AssertNoErrors();
        Assert.False(Directory.Exists(directory));
    }
}
