using PgBackup.Engine.Failover;

namespace PgBackup.Engine.Tests;

public sealed class FenceScriptTests
{
    private const string ControlData = """
        pg_control version number:            1300
        Database cluster state:               shut down
        Latest checkpoint location:           0/5000028
        Latest checkpoint's REDO location:    0/5000028
        """;

    [Fact]
    public void The_final_checkpoint_comes_from_pg_controldata_or_an_lsn_alone_on_a_line()
    {
        Assert.Equal(Lsn.Parse("0/5000028"), FenceScript.FinalCheckpointIn("waiting for server to shut down.... done\n" + ControlData));
        Assert.Equal(Lsn.Parse("16/B374D848"), FenceScript.FinalCheckpointIn("stopped\n16/B374D848\n"));
        Assert.Null(FenceScript.FinalCheckpointIn("server stopped at 0/5000028 or so\n"));
        Assert.Null(FenceScript.FinalCheckpointIn(""));
    }

    [Fact]
    public void The_cluster_state_is_read_when_control_data_was_printed()
    {
        Assert.Equal("shut down", FenceScript.ClusterStateIn(ControlData));
        Assert.Equal("in production", FenceScript.ClusterStateIn(ControlData.Replace("shut down", "in production")));
        Assert.Null(FenceScript.ClusterStateIn("0/5000028"));
    }
}
