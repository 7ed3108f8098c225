/// Laws of the library's layout: what may depend on what. Meaning (IR, builders, persistence, reference,
/// passes, structure recognition) needs no TorchSharp; execution code (kernels, executors, the streamer)
/// never calls a graph pass.
module Duality.Properties.LawsArchitecture

open System
open System.IO
open System.Reflection
open System.Threading.Tasks
open Expecto
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Passes
open Duality.Properties.Support

/// The repository's root: the folder holding Dsl.sln above the test binary.
let private root =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then failwith "Dsl.sln not found above the test binary"
        elif File.Exists(Path.Combine(dir.FullName, "Dsl.sln")) then dir.FullName
        else up dir.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

let private sources folder =
    Directory.GetFiles(Path.Combine(root, folder), "*.cs", SearchOption.AllDirectories)
    |> Array.filter (fun f -> not (f.Contains "/obj/" || f.Contains "/bin/"))

let tests =
    testList "architecture" [
        testCase "meaning assemblies (Duality.Dsl, Duality.Meaning) reference no TorchSharp" <| fun () ->
            for assembly in [ typeof<Graph>.Assembly; typeof<LowerAttention>.Assembly ] do
                let torch = assembly.GetReferencedAssemblies() |> Array.filter (fun a -> a.Name.StartsWith "TorchSharp")
                Expect.isEmpty torch (sprintf "%s references %A" (assembly.GetName().Name) torch)

        testCase "no kernel, executor, module or streamer file imports the passes" <| fun () ->
            let offenders =
                [ "src/Compiler/Torch/Kernels"; "src/Compiler/Torch/Execution"; "src/Compiler/Torch/Modules"; "src/Compiler/Torch/Streaming" ]
                |> Seq.collect sources
                |> Seq.filter (fun f -> File.ReadAllText(f).Contains "Duality.Passes")
                |> Seq.map (fun f -> Path.GetRelativePath(root, f))
                |> List.ofSeq
            Expect.isEmpty offenders "files under Kernels/Execution/Modules/Streaming that name Duality.Passes"

        testCase "no kernel knows the graph: kernel files import neither the IR's graph nor structure recognition" <| fun () ->
            let offenders =
                sources "src/Compiler/Torch/Kernels"
                |> Seq.filter (fun f -> let text = File.ReadAllText f in text.Contains "Duality.Structure" || text.Contains "Graph ")
                |> Seq.map (fun f -> Path.GetRelativePath(root, f))
                |> List.ofSeq
            Expect.isEmpty offenders "kernel files that reach a graph or its structure"

        testCase "every node kind has exactly one execution (module and stepper), found beside its module" <| fun () ->
            let names (types: seq<Type>) = types |> Seq.map (fun t -> t.FullName) |> Set.ofSeq
            Expect.equal (names Duality.Torch.NodeExecutions.Kinds) (names NodeKinds.All) "NodeExecutions covers NodeKinds.All, nothing more"

        testCase "the execution plan names every fused group and the nodes that run by themselves" <| fun () ->
            let g =
                Model.Input("x", 4).Attention(2, 2, 2, outFeatures = Nullable 4, name = "a").Projection(3, name = "readout").Build()
                |> fun g -> LowerAttention.ToGatedRnn(InitializeWeights.Run(g, 1), Construction.Full)
            let compiled = g.Compile()
            Expect.stringContains compiled.Plan "group a: structure-aware gated layer" "the lowered layer is a group"
            Expect.stringContains compiled.Plan "node by node: readout" "the readout runs by itself"

        testCase "a streamer used from two threads at once says so (GraphException 'concurrent use'), never a wrong step" <| fun () ->
            // steps long enough (a 1024 x 1024 projection) that threads started together overlap, rounds until one does
            let g = InitializeWeights.Run(Model.Input("x", 1024).Projection(1024).LinearRecurrence().Projection(8).Build(), 1)
            let streamer = Streaming.Streamer.Create<float32>(g)
            let refused = ref 0
            let stepped = ref 0
            let calls = ref 0
            let mutable rounds = 0
            while refused.Value = 0 && rounds < 50 do
                rounds <- rounds + 1
                use start = new Threading.Barrier(4)
                Parallel.For(0, 4, ParallelOptions(MaxDegreeOfParallelism = 4), fun _ ->
                    start.SignalAndWait()
                    for _ in 1 .. 20 do
                        Threading.Interlocked.Increment calls |> ignore
                        try
                            streamer.Step()
                            Threading.Interlocked.Increment stepped |> ignore
                        with :? GraphException as e when e.Message.Contains "concurrent use" ->
                            Threading.Interlocked.Increment refused |> ignore) |> ignore
            Expect.equal (refused.Value + stepped.Value) calls.Value "every call either stepped or was refused"
            Expect.equal streamer.Steps (int64 stepped.Value) "every step that returned was taken exactly once"
            Expect.isGreaterThan refused.Value 0 "overlapping calls were noticed"
    ]
