// Loads the built libraries into an F# script: put `#load "Duality.fsx"` at the top of a script in
// this folder, after `dotnet build Dsl.sln -c Release`. The folder referenced below holds TorchSharp
// and its native libraries, already fixed up for older libstdc++ by the build.
#r "../src/Testing/bin/Release/net10.0/TorchSharp.dll"
#r "../src/Testing/bin/Release/net10.0/FsCheck.dll"
#r "../src/Testing/bin/Release/net10.0/Duality.Dsl.dll"
#r "../src/Testing/bin/Release/net10.0/Duality.Meaning.dll"
#r "../src/Testing/bin/Release/net10.0/Duality.Compiler.dll"
#r "../src/Testing/bin/Release/net10.0/Duality.FSharp.dll"
#r "../src/Testing/bin/Release/net10.0/Duality.Testing.dll"
// plots (Duality.Plots draws with ScottPlot on SkiaSharp)
#r "../src/Testing/bin/Release/net10.0/SkiaSharp.dll"
#r "../src/Testing/bin/Release/net10.0/HarfBuzzSharp.dll"
#r "../src/Testing/bin/Release/net10.0/SkiaSharp.HarfBuzz.dll"
#r "../src/Testing/bin/Release/net10.0/ScottPlot.dll"
#r "../src/Testing/bin/Release/net10.0/Duality.Plots.dll"

// Scripts have no deps.json to point TorchSharp at its native libraries: load the build's (fixed-up)
// copy by path before TorchSharp looks for it, so it never falls back to the NuGet cache's copy.
do
    let native = System.IO.Path.Combine(__SOURCE_DIRECTORY__, "../src/Testing/bin/Release/net10.0/runtimes/linux-x64/native")
    if System.OperatingSystem.IsLinux() && System.IO.Directory.Exists native then
        for library in [ "libtorch_cpu.so"; "libLibTorchSharp.so" ] do
            System.Runtime.InteropServices.NativeLibrary.Load(System.IO.Path.Combine(native, library)) |> ignore
        // SkiaSharp and HarfBuzzSharp look for their libraries by bare name: point them at the build's copies
        for assembly, library in [ typeof<SkiaSharp.SKCanvas>.Assembly, "libSkiaSharp"; typeof<HarfBuzzSharp.Blob>.Assembly, "libHarfBuzzSharp" ] do
            let path = System.IO.Path.Combine(native, library + ".so")
            System.Runtime.InteropServices.NativeLibrary.SetDllImportResolver(assembly, fun name _ _ ->
                if name = library then System.Runtime.InteropServices.NativeLibrary.Load path else 0n)

fsi.AddPrinter(fun (g: Duality.Ir.Graph) -> g.Summary())
fsi.AddPrinter(fun (r: Duality.Verification.EquivalenceReport) -> r.ToString())
