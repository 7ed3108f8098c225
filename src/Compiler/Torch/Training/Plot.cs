using System.Buffers.Binary;
using System.IO.Compression;

namespace Duality.Training;

/// <summary>Line plots written as PNG files, with no dependency beyond the runtime (zlib + CRC-32).</summary>
public static class Plot
{
    /// <summary>Draws each series (x, y) on one canvas, y on a log10 scale when every y is positive.</summary>
    public static void Lines(string path, IReadOnlyList<(string Name, IReadOnlyList<(double X, double Y)> Points)> series,
        int width = 720, int height = 420)
    {
        var pixels = new byte[height, width, 3];
        for (int r = 0; r < height; r++) for (int c = 0; c < width; c++) for (int k = 0; k < 3; k++) pixels[r, c, k] = 255;
        var all = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.Y)).ToList();
        if (all.Count == 0) { Write(path, pixels); return; }
        var logScale = all.All(p => p.Y > 0);
        double Y(double y) => logScale ? Math.Log10(y) : y;
        double x0 = all.Min(p => p.X), x1 = Math.Max(all.Max(p => p.X), x0 + 1e-12);
        double y0 = all.Min(p => Y(p.Y)), y1 = Math.Max(all.Max(p => Y(p.Y)), y0 + 1e-12);
        const int left = 50, right = 20, top = 20, bottom = 40;
        // ticks: decades (log scale) or the extremes, and the first and last x
        (int, int) Map(double x, double y) =>
            ((int)Math.Round(left + (x - x0) / (x1 - x0) * (width - left - right)),
             (int)Math.Round(height - bottom - (Y(y) - y0) / (y1 - y0) * (height - top - bottom)));
        Line(pixels, left, height - bottom, width - right, height - bottom, (0, 0, 0));
        Line(pixels, left, top, left, height - bottom, (0, 0, 0));
        if (logScale)
            for (var decade = Math.Ceiling(y0); decade <= y1; decade++)
            {
                var (_, row) = Map(x0, Math.Pow(10, decade));
                for (int c = left; c < width - right; c += 4) Set(pixels, row, c, (200, 200, 200));
            }
        if (logScale)
            for (var decade = Math.Ceiling(y0); decade <= y1; decade++)
                Text(pixels, 4, Map(x0, Math.Pow(10, decade)).Item2 - 3, $"1e{decade:0}", (80, 80, 80));
        else
        {
            Text(pixels, 4, top, Number(y1), (80, 80, 80));
            Text(pixels, 4, height - bottom - 7, Number(y0), (80, 80, 80));
        }
        Text(pixels, left, height - bottom + 8, Number(x0), (80, 80, 80));
        var last = Number(x1);
        Text(pixels, width - right - 6 * last.Length, height - bottom + 8, last, (80, 80, 80));
        (byte, byte, byte)[] colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)];
        for (int s = 0; s < series.Count; s++)
        {
            int row = top + 4 + 11 * s, column = width - right - 6 * series[s].Name.Length - 24;
            Line(pixels, column, row + 3, column + 16, row + 3, colours[s % colours.Length]);
            Text(pixels, column + 20, row, series[s].Name, (0, 0, 0));
        }
        for (int s = 0; s < series.Count; s++)
        {
            var points = series[s].Points.Where(p => double.IsFinite(p.Y) && (!logScale || p.Y > 0)).ToList();
            for (int i = 1; i < points.Count; i++)
            {
                var (a, b) = (Map(points[i - 1].X, points[i - 1].Y), Map(points[i].X, points[i].Y));
                Line(pixels, a.Item1, a.Item2, b.Item1, b.Item2, colours[s % colours.Length]);
            }
        }
        Write(path, pixels);
    }

    private static string Number(double v) =>
        Math.Abs(v) >= 1e5 || (Math.Abs(v) < 1e-2 && v != 0) ? v.ToString("0.#e0", System.Globalization.CultureInfo.InvariantCulture)
                                                              : v.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>5 x 7 glyphs, one row of 5 bits per entry, for the characters tick labels and legends use.</summary>
    private static readonly Dictionary<char, byte[]> Glyphs = new()
    {
        ['0'] = [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
        ['1'] = [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        ['2'] = [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
        ['3'] = [0b11110, 0b00001, 0b00001, 0b01110, 0b00001, 0b00001, 0b11110],
        ['4'] = [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
        ['5'] = [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
        ['6'] = [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
        ['7'] = [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
        ['8'] = [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
        ['9'] = [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
        ['.'] = [0, 0, 0, 0, 0, 0b01100, 0b01100],
        ['-'] = [0, 0, 0, 0b11111, 0, 0, 0],
        ['+'] = [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0],
        ['='] = [0, 0, 0b11111, 0, 0b11111, 0, 0],
        ['e'] = [0, 0, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110],
        ['N'] = [0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001, 0b10001],
        ['l'] = [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        ['o'] = [0, 0, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110],
        ['s'] = [0, 0, 0b01111, 0b10000, 0b01110, 0b00001, 0b11110],
        ['t'] = [0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110],
        ['p'] = [0, 0, 0b11110, 0b10001, 0b11110, 0b10000, 0b10000],
    };

    /// <summary>Draws text with its top-left corner at (column, row); characters without a glyph are left blank.</summary>
    private static void Text(byte[,,] p, int column, int row, string text, (byte, byte, byte) colour)
    {
        foreach (var ch in text)
        {
            if (Glyphs.TryGetValue(ch, out var glyph))
                for (int r = 0; r < 7; r++)
                    for (int c = 0; c < 5; c++)
                        if ((glyph[r] >> (4 - c) & 1) == 1) Set(p, row + r, column + c, colour);
            column += 6;
        }
    }

    private static void Set(byte[,,] p, int r, int c, (byte, byte, byte) colour)
    {
        if (r < 0 || c < 0 || r >= p.GetLength(0) || c >= p.GetLength(1)) return;
        (p[r, c, 0], p[r, c, 1], p[r, c, 2]) = colour;
    }

    private static void Line(byte[,,] p, int c0, int r0, int c1, int r1, (byte, byte, byte) colour)
    {
        int steps = Math.Max(Math.Abs(c1 - c0), Math.Abs(r1 - r0)) + 1;
        for (int i = 0; i <= steps; i++)
        {
            int c = c0 + (c1 - c0) * i / steps, r = r0 + (r1 - r0) * i / steps;
            Set(p, r, c, colour);
            Set(p, r + 1, c, colour);
        }
    }

    private static void Write(string path, byte[,,] pixels)
    {
        int height = pixels.GetLength(0), width = pixels.GetLength(1);
        var raw = new byte[height * (1 + 3 * width)];
        for (int r = 0, i = 0; r < height; r++)
        {
            raw[i++] = 0;
            for (int c = 0; c < width; c++) for (int k = 0; k < 3; k++) raw[i++] = pixels[r, c, k];
        }
        using var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
        (header[8], header[9]) = (8, 2);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        using var file = File.Create(path);
        file.Write([137, 80, 78, 71, 13, 10, 26, 10]);
        Chunk(file, "IHDR", header);
        Chunk(file, "IDAT", compressed.ToArray());
        Chunk(file, "IEND", []);
    }

    private static void Chunk(Stream s, string type, byte[] data)
    {
        Span<byte> number = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(number, data.Length);
        s.Write(number);
        var typeBytes = System.Text.Encoding.ASCII.GetBytes(type);
        s.Write(typeBytes);
        s.Write(data);
        BinaryPrimitives.WriteUInt32BigEndian(number, Crc(typeBytes, data));
        s.Write(number);
    }

    private static uint Crc(byte[] type, byte[] data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in type.Concat(data))
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }
}
