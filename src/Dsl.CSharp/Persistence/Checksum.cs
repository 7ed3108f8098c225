using System.Security.Cryptography;
using System.Text.Json;

namespace Duality.Persistence;

/// <summary>
/// The version 2 checksum: SHA-256 of the whole file (the 8-byte header length, the header, the data) as
/// it would read with the 64 hex digits of "__metadata__"."sha256" replaced by the ASCII digit '0'. So
/// every byte but those digits is covered; the digits are upper-case hex and written without escapes.
/// </summary>
internal static class Checksum
{
    public const int Digits = 64;

    private static readonly byte[] zeros = Enumerable.Repeat((byte)'0', Digits).ToArray();

    public static string Placeholder => new('0', Digits);

    /// <summary>Where the digits of "__metadata__"."sha256" start in <paramref name="header"/>; null unless they are one plain 64-character string.</summary>
    public static int? Locate(ReadOnlySpan<byte> header)
    {
        var reader = new Utf8JsonReader(header, new JsonReaderOptions { MaxDepth = 64 });
        var inMetadata = false;
        int? found = null;
        while (reader.Read())
        {
            if (reader.TokenType != JsonTokenType.PropertyName) continue;
            if (reader.CurrentDepth == 1) inMetadata = reader.ValueTextEquals("__metadata__");
            else if (inMetadata && reader.CurrentDepth == 2 && reader.ValueTextEquals("sha256"))
            {
                if (!reader.Read() || reader.TokenType != JsonTokenType.String || reader.ValueIsEscaped || reader.ValueSpan.Length != Digits || found is not null)
                    return null;
                found = checked((int)reader.TokenStartIndex + 1);
            }
        }
        return found;
    }

    public static string Compute(ReadOnlySpan<byte> lengthPrefix, ReadOnlySpan<byte> header, int digitsAt, ReadOnlySpan<byte> data)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(lengthPrefix);
        hash.AppendData(header[..digitsAt]);
        hash.AppendData(zeros);
        hash.AppendData(header[(digitsAt + Digits)..]);
        hash.AppendData(data);
        return Convert.ToHexString(hash.GetHashAndReset());
    }
}
