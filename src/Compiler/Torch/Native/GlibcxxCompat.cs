using System.Buffers.Binary;
using System.Text;

namespace Duality.Runtime;

/// <summary>
/// The ELF edit that lets TorchSharp 0.107.0's libLibTorchSharp.so load with an older libstdc++ (Debian 12 has
/// GLIBCXX_3.4.30): the library needs GLIBCXX_3.4.32 only for std::ios_base_library_init(), which no relocation
/// references, so its version-need entry (an Elf64_Vernaux of .gnu.version_r) is marked weak (VER_FLG_WEAK in
/// vna_flags). The loader then accepts a libstdc++ without that version; a newer libstdc++ is unaffected.
/// The same edit as build/NativeCompat.targets, which applies it to build and publish outputs.
/// </summary>
internal static class GlibcxxCompat
{
    public const string Version = "GLIBCXX_3.4.32";
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>The file offsets of vna_flags of every version-need entry naming <paramref name="version"/>; empty when the file is not a little-endian ELF64 file.</summary>
    public static IReadOnlyList<int> VersionNeedFlags(ReadOnlySpan<byte> elf, string version)
    {
        var found = new List<int>();
        // "\x7fELF", class ELF64 (2), little-endian (1)
        if (elf.Length < 64 || !elf[..6].SequenceEqual((ReadOnlySpan<byte>)[0x7f, 0x45, 0x4c, 0x46, 2, 1]))
            return found;
        long sectionTable = I64(elf, 0x28);
        int entrySize = U16(elf, 0x3A), sections = U16(elf, 0x3C);
        for (int s = 0; s < sections; s++)
        {
            int section = checked((int)(sectionTable + (long)s * entrySize));
            if (U32(elf, section + 4) != ShtGnuVerneed) continue;
            int strings = checked((int)I64(elf, checked((int)(sectionTable + (long)U32(elf, section + 0x28) * entrySize)) + 0x18));
            int need = checked((int)I64(elf, section + 0x18));
            for (uint n = U32(elf, section + 0x2C); n > 0; n--)
            {
                int aux = checked(need + (int)U32(elf, need + 8));
                for (int a = U16(elf, need + 2); a > 0; a--)
                {
                    var name = elf[checked(strings + (int)U32(elf, aux + 8))..];
                    if (name[..name.IndexOf((byte)0)].SequenceEqual(Encoding.ASCII.GetBytes(version))) found.Add(aux + 4);
                    aux = checked(aux + (int)U32(elf, aux + 12));
                }
                need = checked(need + (int)U32(elf, need + 12));
            }
        }
        return found;
    }

    /// <summary>True when the file needs <paramref name="version"/> and some such need is not weak yet.</summary>
    public static bool NeedsWeakening(ReadOnlySpan<byte> elf, string version = Version)
    {
        foreach (var flags in VersionNeedFlags(elf, version))
            if ((U16(elf, flags) & VerFlgWeak) == 0) return true;
        return false;
    }

    /// <summary>Sets VER_FLG_WEAK on every need of <paramref name="version"/>, in place; returns how many entries changed (0 when already weak or absent).</summary>
    public static int Weaken(Span<byte> elf, string version = Version)
    {
        int changed = 0;
        foreach (var flags in VersionNeedFlags(elf, version))
        {
            var value = U16(elf, flags);
            if ((value & VerFlgWeak) != 0) continue;
            BinaryPrimitives.WriteUInt16LittleEndian(elf[flags..], (ushort)(value | VerFlgWeak));
            changed++;
        }
        return changed;
    }

    private static ushort U16(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt16LittleEndian(b[at..]);
    private static uint U32(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b[at..]);
    private static long I64(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadInt64LittleEndian(b[at..]);
}
