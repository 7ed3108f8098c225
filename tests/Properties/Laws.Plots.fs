/// Laws of the plots (Duality.Plots) and of the boundary that keeps drawing out of the core.
module Duality.Properties.LawsPlots

open System
open System.IO
open Expecto
open Duality
open Duality.Plots
open Duality.Training

/// (width, height) from a PNG's IHDR chunk, which must come first: signature, length 13, "IHDR", then two big-endian ints.
let private pngSize (bytes: byte[]) =
    let bigEndian offset = (int bytes.[offset] <<< 24) ||| (int bytes.[offset + 1] <<< 16) ||| (int bytes.[offset + 2] <<< 8) ||| int bytes.[offset + 3]
    Expect.isGreaterThan bytes.Length 33 "longer than the signature and IHDR"
    Expect.sequenceEqual bytes.[0..7] [| 137uy; 80uy; 78uy; 71uy; 13uy; 10uy; 26uy; 10uy |] "PNG signature"
    Expect.equal (bigEndian 8) 13 "IHDR length"
    Expect.equal (Text.Encoding.ASCII.GetString(bytes, 12, 4)) "IHDR" "IHDR first"
    bigEndian 16, bigEndian 20

let private lengths = [ 64; 256; 1024; 4096 ]

/// Every plot function, drawing to a path at a size.
let private drawings: (string * (string -> int -> int -> unit)) list =
    let trained = Students.GatedRnn(2, 6, 4, 2, seed = 1).Compile().ToGraph()
    let losses name scale = Series.Of(name, [ for s in 1 .. 100 -> float s, scale * exp (-0.05 * float s) + 1e-4 ])
    [ "loss curves", fun path w h -> Plots.Losses(path, [ losses "N = 4" 1.0; losses "N = 9" 0.3 ], width = w, height = h)
      "one loss curve", fun path w h -> Plots.Losses(path, [ losses "run" 1.0 ], width = w, height = h)
      "eigenvalues (modulus)", fun path w h -> Plots.Eigenvalues(path, trained, width = w, height = h)
      "eigenvalues (real part)", fun path w h -> Plots.Eigenvalues(path, trained, EigenvaluePart.Real, bins = 8, width = w, height = h)
      "float32 error", fun path w h ->
          Plots.Float32Error(path, [ Series.ByLength("scan", [ for t in lengths -> struct (t, 1e-7 * sqrt (float t)) ])
                                     Series.ByLength("chunked", [ for t in lengths -> struct (t, 3e-7 * sqrt (float t)) ]) ], width = w, height = h)
      "latency", fun path w h ->
          Plots.Latency(path, [ Series.ByLength("attention", [ for t in lengths -> struct (t, 1e-5 * float t * float t) ])
                                Series.ByLength("recurrence", [ for t in lengths -> struct (t, 2e-3 * float t) ]) ], width = w, height = h) ]

/// Assemblies named like a graphics library, among those an assembly references.
let private graphicsReferences (assembly: Reflection.Assembly) =
    assembly.GetReferencedAssemblies()
    |> Array.map (fun a -> a.Name)
    |> Array.filter (fun n -> n.StartsWith("ScottPlot", StringComparison.OrdinalIgnoreCase) || n.StartsWith("SkiaSharp", StringComparison.OrdinalIgnoreCase)
                              || n.StartsWith("HarfBuzz", StringComparison.OrdinalIgnoreCase))

let tests =
    testList "plots" [
        testCase "each plot function writes a PNG of the requested size" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-plots-").FullName
            for name, draw in drawings do
                for width, height in [ 640, 400; 333, 517 ] do
                    let path = Path.Combine(directory, $"{width}x{height}", name + ".png")
                    draw path width height
                    let bytes = File.ReadAllBytes path
                    Expect.equal (pngSize bytes) (width, height) $"{name}: IHDR size"
                    // a blank canvas of that size compresses to about a kilobyte; axes, text and curves add more
                    Expect.isGreaterThan bytes.Length 5000 $"{name}: a picture, not a blank canvas"
            Directory.Delete(directory, true)

        testCase "a graph without lambda values, an empty list of series, or a bad size is refused before any file is written" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-plots-").FullName
            let path = Path.Combine(directory, "p.png")
            let untrained = Students.LinearAttention(2, 2)
            for name, draw in
                [ "no recurrence", fun () -> Plots.Eigenvalues(path, untrained)
                  "no series", fun () -> Plots.Losses(path, [])
                  "width 0", fun () -> Plots.Latency(path, [ Series.Of("a", [ struct (1.0, 1.0) ]) ], width = 0)
                  "empty path", fun () -> Plots.Float32Error("", [ Series.Of("a", [ struct (1.0, 1.0) ]) ]) ] do
                let error = Expect.throwsC draw id
                Expect.isTrue (error :? ArgumentException) $"{name}: an ArgumentException, not {error.GetType().Name}"
            Expect.isFalse (File.Exists path) "nothing written"
            Expect.throwsT<ArgumentException> (fun () -> Series("a", [| 1.0; 2.0 |], [| 1.0 |]) |> ignore) "a series with more x than y values"
            Directory.Delete(directory, true)

        testCase "the core assemblies (Dsl, Meaning, Compiler) do not reference ScottPlot or SkiaSharp; Duality.Plots does" <| fun () ->
            for marker in [ typeof<Duality.Ir.Graph>.Assembly; typeof<Duality.Passes.LowerAttention>.Assembly; typeof<Trainer>.Assembly ] do
                Expect.isEmpty (graphicsReferences marker) $"{marker.GetName().Name} references no graphics library"
            Expect.isNonEmpty (graphicsReferences typeof<Series>.Assembly) "Duality.Plots draws with ScottPlot"
    ]
