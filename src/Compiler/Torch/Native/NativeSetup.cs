using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Duality.Runtime;

/// <summary>
/// Lets TorchSharp's native library load where no build step fixed it: F# scripts with <c>#r "nuget: ..."</c>, or a
/// project that excludes the package's build assets. On Linux, when the libstdc++ the loader resolves lacks
/// GLIBCXX_3.4.32 (Debian 12) and the libLibTorchSharp.so TorchSharp would load still needs it, a copy with that need
/// marked weak is written once to <c>$XDG_CACHE_HOME/duality/native/&lt;sha256 of the original&gt;/</c> (default
/// <c>~/.cache</c>), and libtorch and that copy are loaded by full path; TorchSharp's own load by name then finds it
/// already loaded (glibc matches a loaded library's soname). The NuGet cache is never written. Elsewhere (newer
/// libstdc++, a fixed build output, other systems, TorchSharp already loaded) it does nothing.
/// It runs when Duality.Compiler is first used; call <see cref="Ensure"/> before using TorchSharp directly.
/// </summary>
public static class NativeSetup
{
    private const string TorchSharpLibrary = "libLibTorchSharp.so";
    // the libraries libLibTorchSharp.so needs from libtorch, found by $ORIGIN beside the original but not beside the copy
    private static readonly string[] LibTorch = ["libc10.so", "libtorch_cpu.so", "libtorch.so"];

    private static readonly Lazy<(string? Loaded, string? Problem)> Outcome = new(Prepare);

#pragma warning disable CA2255 // a module initializer is the only hook that runs before TorchSharp in a script
    [ModuleInitializer]
    internal static void Initialize()
#pragma warning restore CA2255
    {
        try
        {
            if (Outcome.Value.Problem is { } problem) Console.Error.WriteLine($"Duality: {problem}");
        }
        catch
        {
            // never break the library: TorchSharp reports its own error when it cannot load
        }
    }

    /// <summary>
    /// Makes sure TorchSharp's native library can load (see <see cref="NativeSetup"/>); returns the path of the
    /// fixed-up copy that was loaded, or null when nothing was needed. Idempotent.
    /// </summary>
    /// <exception cref="NativeSetupException">the fix was needed and could not be made; the message says why.</exception>
    public static string? Ensure()
    {
        var (loaded, problem) = Outcome.Value;
        return problem is null ? loaded : throw new NativeSetupException(problem);
    }

    private static (string? Loaded, string? Problem) Prepare()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return (null, null);
        try
        {
            if (MappedPath(TorchSharpLibrary) is not null) return (null, null);
            var original = Find(TorchSharpLibrary, TorchSharpDirectories());
            if (original is null) return (null, null);
            var elf = File.ReadAllBytes(original);
            if (!GlibcxxCompat.NeedsWeakening(elf) || LibstdcxxProvides(GlibcxxCompat.Version)) return (null, null);
            var libtorch = Find("libtorch_cpu.so", LibTorchDirectories(original));
            if (libtorch is null)
                return (null, $"{original} needs {GlibcxxCompat.Version}, which this system's libstdc++ lacks, and libtorch_cpu.so "
                    + "was not found to load a fixed copy with; reference TorchSharp-cpu (it brings libtorch-cpu)");
            var copy = FixedCopy(original, elf);
            foreach (var name in LibTorch)
                if (Path.Combine(Path.GetDirectoryName(libtorch)!, name) is var path && File.Exists(path)) NativeLibrary.Load(path);
            NativeLibrary.Load(copy);
            return (copy, null);
        }
        catch (Exception e)
        {
            return (null, $"could not prepare TorchSharp's native library for this system's libstdc++ (it lacks {GlibcxxCompat.Version}): "
                + $"{e.GetType().Name}: {e.Message}\n  hint: the fixed copy is written under {Path.Combine(CacheRoot(), "duality", "native")}; "
                + "set XDG_CACHE_HOME to a writable folder, or build a project (its output copy is fixed by the package's build step)");
        }
    }

    /// <summary>The original with the need weakened, in the user's cache; written to a temporary file and renamed, so racing processes each see a whole file.</summary>
    private static string FixedCopy(string original, byte[] elf)
    {
        var hash = Convert.ToHexStringLower(SHA256.HashData(elf));
        var folder = Path.Combine(CacheRoot(), "duality", "native", hash);
        var target = Path.Combine(folder, TorchSharpLibrary);
        var patched = (byte[])elf.Clone();
        if (GlibcxxCompat.Weaken(patched) == 0) throw new InvalidDataException($"{original}: no {GlibcxxCompat.Version} need to weaken");
        if (File.Exists(target) && File.ReadAllBytes(target).AsSpan().SequenceEqual(patched)) return target;
        Directory.CreateDirectory(folder);
        var temporary = Path.Combine(folder, $".{TorchSharpLibrary}.{Environment.ProcessId}.{Guid.NewGuid():N}");
        try
        {
            File.WriteAllBytes(temporary, patched);
            File.Move(temporary, target, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
        return target;
    }

    private static string CacheRoot() =>
        Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg && Path.IsPathRooted(xdg) ? xdg
        : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) is { Length: > 0 } home ? Path.Combine(home, ".cache")
        : Path.GetTempPath();

    /// <summary>Where the runtime would look (an application's native folders), TorchSharp's own folder, then its package's native folder.</summary>
    private static IEnumerable<string> TorchSharpDirectories()
    {
        foreach (var d in (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            yield return d;
        var assembly = Path.GetDirectoryName(typeof(TorchSharp.torch).Assembly.Location);
        if (string.IsNullOrEmpty(assembly)) yield break;
        yield return assembly;
        yield return Path.Combine(assembly, "runtimes", "linux-x64", "native");
        // <packages>/torchsharp/<version>/lib/<framework>/TorchSharp.dll
        yield return Path.GetFullPath(Path.Combine(assembly, "..", "..", "runtimes", "linux-x64", "native"));
    }

    /// <summary>Beside TorchSharp's library (an application's output), then the libtorch-cpu-linux-x64 package TorchSharp-cpu names.</summary>
    private static IEnumerable<string> LibTorchDirectories(string torchSharpLibrary)
    {
        yield return Path.GetDirectoryName(torchSharpLibrary)!;
        foreach (var d in TorchSharpDirectories()) yield return d;
        var assembly = Path.GetDirectoryName(typeof(TorchSharp.torch).Assembly.Location);
        if (string.IsNullOrEmpty(assembly)) yield break;
        var packages = Path.GetFullPath(Path.Combine(assembly, "..", "..", "..", ".."));
        var libtorch = Path.Combine(packages, "libtorch-cpu-linux-x64");
        if (!Directory.Exists(libtorch)) yield break;
        var named = NamedLibTorchVersion(packages, Path.GetFileName(Path.GetFullPath(Path.Combine(assembly, "..", ".."))));
        if (named is not null) yield return Path.Combine(libtorch, named, "runtimes", "linux-x64", "native");
        foreach (var version in Directory.GetDirectories(libtorch).OrderByDescending(d => System.Version.TryParse(Path.GetFileName(d), out var v) ? v : new Version()))
            yield return Path.Combine(version, "runtimes", "linux-x64", "native");
    }

    /// <summary>The libtorch-cpu version TorchSharp-cpu's nuspec depends on (the one a restore picks), when that package is present.</summary>
    private static string? NamedLibTorchVersion(string packages, string torchSharpVersion)
    {
        var nuspec = Path.Combine(packages, "torchsharp-cpu", torchSharpVersion, "torchsharp-cpu.nuspec");
        if (!File.Exists(nuspec)) return null;
        var text = File.ReadAllText(nuspec);
        const string marker = "id=\"libtorch-cpu\" version=\"";
        var at = text.IndexOf(marker, StringComparison.OrdinalIgnoreCase);
        return at < 0 ? null : text[(at + marker.Length)..text.IndexOf('"', at + marker.Length)].Trim('[', ']', '(', ')');
    }

    private static string? Find(string file, IEnumerable<string> directories) =>
        directories.Select(d => Path.Combine(d, file)).FirstOrDefault(File.Exists);

    /// <summary>Loads libstdc++ as the loader resolves it and reads its version definitions' names.</summary>
    private static bool LibstdcxxProvides(string version)
    {
        if (!NativeLibrary.TryLoad("libstdc++.so.6", out _)) return false;
        var path = MappedPath("libstdc++.so.6");
        return path is not null && File.ReadAllBytes(path).AsSpan().IndexOf(Encoding.ASCII.GetBytes($"\0{version}\0")) >= 0;
    }

    /// <summary>The path of a mapped library whose file name starts with <paramref name="name"/>, from /proc/self/maps.</summary>
    internal static string? MappedPath(string name)
    {
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            var slash = line.IndexOf('/');
            if (slash >= 0 && Path.GetFileName(line.AsSpan(slash)).StartsWith(name, StringComparison.Ordinal)) return line[slash..];
        }
        return null;
    }
}

/// <summary>TorchSharp's native library needed a fix-up for this system (see <see cref="NativeSetup"/>) that could not be made.</summary>
public sealed class NativeSetupException(string message) : Exception(message);
