namespace PgBackup.Engine.Tests;

public sealed class LsnAndSegmentTests
{
    private const long Mb16 = 16L * 1024 * 1024;
    private const long Gb1 = 1024L * 1024 * 1024;

    [Theory]
    [InlineData("0/0", 0UL)]
    [InlineData("0/16B3748", 0x16B3748UL)]
    [InlineData("16/B374D848", 0x16_B374_D848UL)]
    [InlineData("FFFFFFFF/FFFFFFFF", ulong.MaxValue)]
    public void Lsn_parses_and_formats_as_PostgreSQL_does(string text, ulong value)
    {
        var lsn = Lsn.Parse(text);
        Assert.Equal(value, lsn.Value);
        Assert.Equal(text, lsn.ToString());
    }

    [Fact]
    public void Lsn_accepts_lower_case_and_formats_upper_case_without_padding()
    {
        Assert.Equal("16/B374D848", Lsn.Parse("16/b374d848").ToString());
        Assert.Equal("0/3000000", Lsn.Parse("00000000/03000000").ToString());
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("/1")]
    [InlineData("1/")]
    [InlineData("G/1")]
    [InlineData("1/2/3")]
    [InlineData("100000000/0")]
    [InlineData(" 0/1")]
    [InlineData("-1/0")]
    public void Lsn_rejects_what_is_not_an_lsn(string? text)
    {
        Assert.False(Lsn.TryParse(text, out _));
        if (text != null) Assert.Throws<FormatException>(() => Lsn.Parse(text));
    }

    [Fact]
    public void Lsn_orders_by_position_not_by_text()
    {
        var lsns = new[] { "10/0", "9/FFFFFFFF", "0/A000000", "0/9000000" }.Select(Lsn.Parse).Order().Select(l => l.ToString());
        Assert.Equal(["0/9000000", "0/A000000", "9/FFFFFFFF", "10/0"], lsns);
        Assert.True(Lsn.Parse("0/9000000") < Lsn.Parse("0/A000000"));
        Assert.True(Lsn.Parse("1/0") > Lsn.Parse("0/FFFFFFFF"));
        Assert.True(Lsn.Parse("1/0") >= Lsn.Parse("1/0") && Lsn.Parse("1/0") <= Lsn.Parse("1/0"));
        Assert.Equal(Lsn.Parse("1/0"), Lsn.Parse("1/00000000"));
    }

    [Fact]
    public void Lsn_difference_is_bytes_of_WAL_and_signed()
    {
        Assert.Equal(Mb16, Lsn.Parse("0/3000000") - Lsn.Parse("0/2000000"));
        Assert.Equal(1, Lsn.Parse("1/0") - Lsn.Parse("0/FFFFFFFF"));
        Assert.Equal(-0x28, Lsn.Parse("0/2000000") - Lsn.Parse("0/2000028"));
        Assert.Equal(Lsn.Parse("1/0"), Lsn.Parse("0/FFFFFFFF") + 1);
        Assert.Equal(Lsn.Parse("0/2000000"), Lsn.Parse("0/2000028") + -0x28);
    }

    [Fact]
    public void Segment_name_parses_into_timeline_log_and_segment()
    {
        var segment = WalSegmentName.Parse("0000000A000000160000003F");
        Assert.Equal((10u, 0x16u, 0x3Fu), (segment.Timeline, segment.Log, segment.Segment));
        Assert.Equal("0000000A000000160000003F", segment.ToString());
        Assert.Equal("0000000A000000160000003F", WalSegmentName.Parse("0000000a000000160000003f").ToString());
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("00000001000000000000003")]
    [InlineData("0000000100000000000000030")]
    [InlineData("00000001000000000000003G")]
    [InlineData("000000010000000000000003.partial")]
    [InlineData("00000002.history")]
    public void Segment_name_rejects_other_names(string? name)
    {
        Assert.False(WalSegmentName.TryParse(name, out _));
        if (name != null) Assert.Throws<FormatException>(() => WalSegmentName.Parse(name));
    }

    [Theory]
    [InlineData("0/0", "000000010000000000000000")]
    [InlineData("0/3000028", "000000010000000000000003")]
    [InlineData("0/3FFFFFF", "000000010000000000000003")]
    [InlineData("0/FFFFFFFF", "0000000100000000000000FF")]
    [InlineData("1/0", "000000010000000100000000")]
    [InlineData("16/B374D848", "0000000100000016000000B3")]
    public void Segment_from_lsn_with_16MB_segments(string lsn, string segment) =>
        Assert.Equal(segment, WalSegmentName.FromLsn(1, Lsn.Parse(lsn), Mb16).ToString());

    [Theory]
    [InlineData("0/3FFFFFFF", "000000010000000000000000")]
    [InlineData("0/C0000000", "000000010000000000000003")]
    [InlineData("0/FFFFFFFF", "000000010000000000000003")]
    [InlineData("1/40000000", "000000010000000100000001")]
    public void Segment_from_lsn_with_1GB_segments(string lsn, string segment) =>
        Assert.Equal(segment, WalSegmentName.FromLsn(1, Lsn.Parse(lsn), Gb1).ToString());

    [Fact]
    public void Next_wraps_into_the_next_log_after_the_last_segment_of_a_log()
    {
        // 16 MB segments: 256 per 4 GB log, 00 to FF.
        Assert.Equal("000000010000000000000004", WalSegmentName.Parse("000000010000000000000003").Next(Mb16).ToString());
        Assert.Equal("000000010000000100000000", WalSegmentName.Parse("0000000100000000000000FF").Next(Mb16).ToString());
        Assert.Equal("000000030000001000000000", WalSegmentName.Parse("000000030000000F000000FF").Next(Mb16).ToString());
        // 1 GB segments: 4 per log, 00 to 03.
        Assert.Equal("000000010000000100000000", WalSegmentName.Parse("000000010000000000000003").Next(Gb1).ToString());
    }

    [Fact]
    public void Number_counts_segments_from_the_start_of_the_WAL_regardless_of_timeline()
    {
        Assert.Equal(0UL, WalSegmentName.Parse("000000010000000000000000").Number(Mb16));
        Assert.Equal(255UL, WalSegmentName.Parse("0000000100000000000000FF").Number(Mb16));
        Assert.Equal(256UL, WalSegmentName.Parse("000000010000000100000000").Number(Mb16));
        Assert.Equal(256UL, WalSegmentName.Parse("000000050000000100000000").Number(Mb16));
        Assert.Equal(4UL, WalSegmentName.Parse("000000010000000100000000").Number(Gb1));
        Assert.Equal(7UL, WalSegmentName.Parse("000000010000000100000003").Number(Gb1));
        foreach (var size in new[] { Mb16, Gb1, 1L << 20 })
            foreach (var number in new ulong[] { 0, 1, 3, 4, 255, 256, 257, 4096, 100_000 })
                Assert.Equal(number, WalSegmentName.FromNumber(2, number, size).Number(size));
    }

    [Fact]
    public void StartLsn_is_the_first_position_in_the_segment_and_FromLsn_inverts_it()
    {
        Assert.Equal("1/2000000", WalSegmentName.Parse("000000010000000100000002").StartLsn(Mb16).ToString());
        Assert.Equal("1/80000000", WalSegmentName.Parse("000000010000000100000002").StartLsn(Gb1).ToString());
        var segment = WalSegmentName.Parse("00000002000000AB000000CD");
        Assert.Equal(segment, WalSegmentName.FromLsn(2, segment.StartLsn(Mb16), Mb16));
        Assert.Equal(Mb16, segment.Next(Mb16).StartLsn(Mb16) - segment.StartLsn(Mb16));
    }

    [Fact]
    public void Segment_names_order_by_timeline_then_position()
    {
        var names = new[] { "000000020000000000000001", "000000010000000100000000", "0000000100000000000000FF", "000000010000000000000002" }
            .Select(WalSegmentName.Parse).Order().Select(s => s.ToString());
        Assert.Equal(["000000010000000000000002", "0000000100000000000000FF", "000000010000000100000000", "000000020000000000000001"], names);
    }
}
