/// Laws of what the packages carry: the ELF edit that lets TorchSharp's native library load with Debian 12's
/// libstdc++ (GlibcxxCompat, used by NativeSetup at run time; build/NativeCompat.targets does the same at build time),
/// and which assemblies may see internals.
module Duality.Properties.LawsPackaging

open System
open System.IO
open System.Reflection
open System.Runtime.CompilerServices
open Expecto
open Duality.Runtime

/// TorchSharp's libLibTorchSharp.so as restored into the NuGet cache: the original, never written.
let private original =
    let packages =
        match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
        | null | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
        | folder -> folder
    let v = typeof<TorchSharp.torch>.Assembly.GetName().Version
    Path.Combine(packages, "torchsharp", sprintf "%d.%d.%d" v.Major v.Minor v.Build, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")

/// The build output's copy, fixed by build/NativeCompat.targets.
let private built = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")

let private weak = 0x2us

let tests =
    testList "packaging" [
        testCase "weakening GLIBCXX_3.4.32 sets VER_FLG_WEAK on its version needs and changes no other byte; again, nothing" <| fun () ->
            let folder = Directory.CreateTempSubdirectory("duality-elf-").FullName
            try
                let copy = Path.Combine(folder, "libLibTorchSharp.so")
                File.Copy(original, copy)
                let before = File.ReadAllBytes copy
                let flags = GlibcxxCompat.VersionNeedFlags(ReadOnlySpan before, GlibcxxCompat.Version) |> List.ofSeq
                Expect.isNonEmpty flags "the original needs GLIBCXX_3.4.32"
                Expect.isTrue (GlibcxxCompat.NeedsWeakening(ReadOnlySpan before, GlibcxxCompat.Version)) "the original's need is strong"
                let after = Array.copy before
                Expect.equal (GlibcxxCompat.Weaken(Span after, GlibcxxCompat.Version)) flags.Length "every need changed"
                let changed = [ for i in 0 .. before.Length - 1 do if before.[i] <> after.[i] then i ]
                let flagBytes = flags |> List.collect (fun f -> [ f; f + 1 ])
                Expect.isTrue (changed |> List.forall (fun i -> List.contains i flagBytes)) "only vna_flags bytes change"
                for f in flags do
                    let flagsOf (b: byte[]) = BitConverter.ToUInt16(b, f)
                    Expect.equal (flagsOf after) (flagsOf before ||| weak) "vna_flags gains VER_FLG_WEAK, keeps the rest"
                Expect.isFalse (GlibcxxCompat.NeedsWeakening(ReadOnlySpan after, GlibcxxCompat.Version)) "weak after the edit"
                let again = Array.copy after
                Expect.equal (GlibcxxCompat.Weaken(Span again, GlibcxxCompat.Version)) 0 "idempotent: nothing left to change"
                Expect.sequenceEqual again after "idempotent: same bytes"
                Expect.sequenceEqual (File.ReadAllBytes original) before "the NuGet cache's copy is untouched"
                if File.Exists built then
                    Expect.sequenceEqual (File.ReadAllBytes built) after "the build's copy (build/NativeCompat.targets) = this edit"
            finally
                Directory.Delete(folder, true)

        testCase "files without the need are left alone: libtorch's own libraries, a version not needed, bytes that are not ELF" <| fun () ->
            let libc10 = Path.Combine(Path.GetDirectoryName built, "libc10.so")
            let cases =
                [ (if File.Exists libc10 then File.ReadAllBytes libc10 else [||]), GlibcxxCompat.Version
                  File.ReadAllBytes original, "GLIBCXX_9.9.99"
                  Array.init 4096 byte, GlibcxxCompat.Version
                  [||], GlibcxxCompat.Version ]
            for bytes, version in cases do
                let edited = Array.copy bytes
                Expect.equal (GlibcxxCompat.Weaken(Span edited, version)) 0 "nothing to weaken"
                Expect.sequenceEqual edited bytes "unchanged"

        testCase "in a build output the loader does nothing: the targets fixed the copy the runtime loads" <| fun () ->
            Expect.isNull (NativeSetup.Ensure()) "no copy written or loaded"

        testCase "internals are visible only to the library's own assemblies and the tests, never to examples" <| fun () ->
            let allowed = set [ "Duality.Meaning"; "Duality.Compiler"; "Duality.Properties" ]
            for assembly in [ typeof<Duality.Ir.Graph>.Assembly; typeof<Duality.Passes.LowerAttention>.Assembly; typeof<NativeSetup>.Assembly ] do
                let friends = assembly.GetCustomAttributes<InternalsVisibleToAttribute>() |> Seq.map (fun a -> a.AssemblyName) |> Set.ofSeq
                Expect.isTrue (Set.isSubset friends allowed) (sprintf "%s shows its internals to %A" (assembly.GetName().Name) friends)
    ]
