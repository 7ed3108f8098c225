using System.Security;

namespace Duality.Persistence;

/// <summary>
/// Replacing a file whole: the bytes go to a temporary file beside the target, which is then moved over
/// it, so a reader sees the old file or the new one, never a mix. A symbolic link is followed to its final
/// target, which is replaced; the link stays a link. Failures are <see cref="GraphFileException"/>s
/// ("cannot write ...") naming the path, never bare I/O exceptions.
/// </summary>
internal static class FileWriting
{
    public static void ReplaceAtomically(string path, params byte[][] parts)
    {
        GraphFileException Cannot(string problem, string hint, Exception? inner = null) => GraphFileException.CannotWrite(path, problem, hint, inner);
        string target;
        try
        {
            var full = Path.GetFullPath(path);
            target = new FileInfo(full).LinkTarget is null ? full : File.ResolveLinkTarget(full, returnFinalTarget: true)?.FullName ?? full;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException or SecurityException)
        {
            throw Cannot($"the path cannot be resolved: {e.Message}", "check the path and any symbolic links in it", e);
        }
        var through = target == Path.GetFullPath(path) ? "" : $"(through the link to '{target}') ";
        var directory = Path.GetDirectoryName(target);
        if (string.IsNullOrEmpty(directory) || !Directory.Exists(directory))
            throw File.Exists(directory)
                ? Cannot($"{through}'{directory}' is a file, not a folder", "save into a folder; check the path")
                : Cannot($"{through}the folder '{directory}' does not exist", "create the folder first, or check the path");
        if (Directory.Exists(target)) throw Cannot($"{through}'{target}' is a folder", "give the path of a file, such as 'model.safetensors'");
        var temporary = Path.Combine(directory, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                foreach (var part in parts) stream.Write(part);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, target, overwrite: true);
        }
        catch (UnauthorizedAccessException e)
        {
            throw Cannot($"{through}permission denied: {e.Message}", "save into a folder you may write to, or change its permissions", e);
        }
        catch (Exception e) when (e is IOException or NotSupportedException or SecurityException)
        {
            throw Cannot($"{through}{e.Message}", "check that the folder is writable and its disk has space; any previous file is unchanged", e);
        }
        finally
        {
            try
            {
                if (File.Exists(temporary)) File.Delete(temporary);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // the save itself has succeeded or failed already; a stray temporary file is not worth hiding that
            }
        }
    }
}
