using PgBackup.Engine.Recovery;

namespace PgBackup.Engine.Tests;

public sealed class RecoveryConfigTests
{
    private static RecoverySettings Settings(RecoveryTarget target) => new()
    {
        RestoreCommand = "'/usr/bin/dotnet' '/opt/it''s/pgbackup-wal.dll' fetch 'C:\\wal' '%f' '%p'",
        Target = target,
        Timeline = "3",
        Port = 5433,
        ListenAddresses = "localhost",
        SocketDirectory = "/tmp",
    };

    [Fact]
    public void PostgreSQL_12_and_later_get_settings_in_postgresql_auto_conf_and_a_recovery_signal()
    {
        var target = RecoveryTarget.AtTime(new DateTimeOffset(2026, 11, 23, 14, 4, 0, TimeSpan.FromHours(1)), inclusive: false);
        target.Action = RecoveryTargetAction.Pause;
        var files = RecoveryConfig.Render(Settings(target), 15, "header");

        Assert.Equal(["postgresql.auto.conf", "recovery.signal"], files.Select(f => f.File));
        var conf = files[0].Content;
        Assert.True(files[0].Append);
        Assert.Contains("# header\n", conf);
        Assert.Contains("recovery_target_time = '2026-11-23 13:04:00.000000+00'\n", conf);
        Assert.Contains("recovery_target_inclusive = off\n", conf);
        Assert.Contains("recovery_target_timeline = '3'\n", conf);
        Assert.Contains("recovery_target_action = 'pause'\n", conf);
        Assert.Contains("archive_mode = off\n", conf);
        Assert.Contains("port = 5433\n", conf);
        Assert.Contains("primary_conninfo = ''\n", conf);
        // Quotes doubled, backslashes doubled: the configuration file parser reads \ escapes.
        Assert.Contains(@"restore_command = '''/usr/bin/dotnet'' ''/opt/it''''s/pgbackup-wal.dll'' fetch ''C:\\wal'' ''%f'' ''%p'''", conf);
    }

    [Fact]
    public void PostgreSQL_11_and_earlier_get_a_recovery_conf()
    {
        var files = RecoveryConfig.Render(Settings(RecoveryTarget.AtXid(4242)) with { KeepArchiving = true }, 11, "header");
        Assert.Equal(["postgresql.auto.conf", "recovery.conf"], files.Select(f => f.File));
        Assert.DoesNotContain("restore_command", files[0].Content);
        Assert.DoesNotContain("archive_mode", files[0].Content);
        Assert.Contains("recovery_target_xid = '4242'\n", files[1].Content);
        Assert.Contains("standby_mode = off\n", files[1].Content);
        Assert.False(files[1].Append);
    }

    [Theory]
    [InlineData(RecoveryTargetKind.Immediate, "recovery_target = 'immediate'")]
    [InlineData(RecoveryTargetKind.Name, "recovery_target_name = 'before upgrade'")]
    [InlineData(RecoveryTargetKind.Lsn, "recovery_target_lsn = '16/B374D848'")]
    public void Each_target_kind_has_its_setting(RecoveryTargetKind kind, string expected)
    {
        var target = new RecoveryTarget { Kind = kind, Name = "before upgrade", Lsn = Lsn.Parse("16/B374D848") };
        var conf = RecoveryConfig.Render(Settings(target), 16, "h")[0].Content;
        Assert.Contains(expected + "\n", conf);
        Assert.Equal(1, conf.Split('\n').Count(l => l.StartsWith("recovery_target", StringComparison.Ordinal) && !l.StartsWith("recovery_target_timeline", StringComparison.Ordinal) && !l.StartsWith("recovery_target_action", StringComparison.Ordinal) && !l.StartsWith("recovery_target_inclusive", StringComparison.Ordinal)));
    }

    [Fact]
    public void Latest_sets_no_target_and_no_action()
    {
        var conf = RecoveryConfig.Render(Settings(RecoveryTarget.EndOfArchive()), 15, "h")[0].Content;
        Assert.DoesNotContain("recovery_target_action", conf);
        Assert.DoesNotContain("recovery_target =", conf);
        Assert.Contains("recovery_target_timeline = '3'", conf);
    }
}

public sealed class RecoveryChoicesTests
{
    private static RecoveryTargetChoice None => new(null, null, null, null, false, false, false, null, RecoveryTargetAction.Promote);

    [Fact]
    public void Exactly_one_target_is_taken_with_its_inclusiveness_timeline_and_action()
    {
        var time = new DateTimeOffset(2026, 11, 23, 14, 4, 0, TimeSpan.Zero);
        var target = RecoveryChoices.Target(None with { Time = time, Exclusive = true, Timeline = "current", Action = RecoveryTargetAction.Pause });
        Assert.Equal(RecoveryTargetKind.Time, target.Kind);
        Assert.Equal(time, target.Time);
        Assert.False(target.Inclusive);
        Assert.Equal("current", target.Timeline);
        Assert.Equal(RecoveryTargetAction.Pause, target.Action);
        Assert.Equal(RecoveryTargetKind.Latest, RecoveryChoices.Target(None with { Latest = true }).Kind);
    }

    [Theory]
    [InlineData("none", "PgBackup.NoRecoveryTarget")]
    [InlineData("two", "PgBackup.TooManyRecoveryTargets")]
    [InlineData("exclusive name", "PgBackup.ExclusiveNotApplicable")]
    [InlineData("latest pause", "PgBackup.TargetActionNotApplicable")]
    public void Choices_that_make_no_single_target_are_refused(string what, string errorId)
    {
        var choice = what switch
        {
            "none" => None,
            "two" => None with { Immediate = true, Latest = true },
            "exclusive name" => None with { Name = "before-upgrade", Exclusive = true },
            _ => None with { Latest = true, Action = RecoveryTargetAction.Pause },
        };
        var e = Assert.Throws<PgBackupException>(() => RecoveryChoices.Target(choice));
        Assert.Equal(errorId, e.ErrorId);
        Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
    }
}
