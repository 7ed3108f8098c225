/// Laws of PyTorch weights (Duality.Interop): state_dicts saved by PyTorch (fixtures/pytorch, made by make.py with
/// torch 1.13 in float64) load into the matching graphs and compute PyTorch's outputs, also after LowerAttention;
/// saving and loading round-trips bit-exactly; keys that do not fit are refused naming the key; hostile pickles are
/// refused naming their global, without running. No law needs Python.
module Duality.Properties.LawsPyTorch

open System
open System.Buffers.Binary
open System.IO
open System.IO.Compression
open System.Text
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Duality
open Duality.Ir
open Duality.Builders
open Duality.Interop
open Duality.Passes
open Duality.Persistence
open Duality.Reference
open Duality.Testing.Generators
open Duality.Testing.Sequences
open Duality.Properties.Support

let private config = { FsCheckConfig.defaultConfig with maxTest = 60; endSize = 48 }

let private fixture name = fixturePath ("pytorch/" + name)

let private temporary (extension: string) = Path.Combine(Path.GetTempPath(), $"duality-pytorch-{Guid.NewGuid():N}{extension}")

let private withFile extension (f: string -> 'a) =
    let path = temporary extension
    try f path finally File.Delete path

/// The causal linear attention of make.py: In 4, 2 heads, key width 3, value width 2, output projection to 4.
let private attentionGraph () = Model.Input("x", 4).Attention(2, 3, 2, outFeatures = 4, name = "attn").Build()

let private attentionMapping =
    WeightMapping.Empty.Map("q_proj.weight", "attn", "Query").Map("k_proj.weight", "attn", "Key")
        .Map("v_proj.weight", "attn", "Value").Map("o_proj.weight", "attn", "Output")

/// The gated RNN of make.py: out(memory(value(x)) * silu(gate(x))).
let private gatedGraph () =
    Model.Input("x", 4)
        .Gate((fun v -> v.Projection(8, name = "value").LinearRecurrence(name = "memory")), (fun g -> g.Projection(8, name = "gate")),
              ActivationKind.SiLU, name = "mix")
        .Projection(4, name = "out").Build()

/// Node names of the gated graph by their last path segment (the builder scopes branch names under the gate).
let private gatedMapping (g: Graph) =
    let named (last: string) = g.Nodes |> Seq.map (fun n -> n.Name) |> Seq.find (fun n -> n = last || n.EndsWith("/" + last))
    WeightMapping.Empty.Linear("value", named "value").Linear("gate", named "gate").Map("lam", named "memory", "Lambda").Linear("out", "out")

let private io = lazy (PyTorchWeights.Read(fixture "io.safetensors"))

let private sequence (t: DoubleTensor) =
    let b, n, f = t.Shape.[0], t.Shape.[1], t.Shape.[2]
    Array3D.init b n f (fun i j k -> t.Data.[(i * n + j) * f + k])

/// The graph's output on make.py's input, compiled in float64.
let private run (g: Graph) =
    noGrad (fun () ->
        let x = toTensor torch.ScalarType.Float64 (sequence io.Value.["x"])
        g.Compile(CompileOptions.Float64).Forward([| x |]).[0] |> ofTensor)

let private matches tolerance (expected: string) (g: Graph) =
    let error = scaledError (sequence io.Value.[expected]) (run g)
    if error > tolerance then failtestf "scaled error %.3e against PyTorch's %s output exceeds %.1e" error expected tolerance

let private refusedBy<'e when 'e :> exn> (fragments: string list) (f: unit -> unit) =
    try
        f ()
        failtest "the file was loaded"
    with
    | :? 'e as e -> for fragment in fragments do Expect.stringContains e.Message fragment "the message"
    | e when (e :? AssertException) -> reraise ()
    | e -> failtestf "expected a %s, got %O" typeof<'e>.Name e

/// A safetensors file of the given tensors (name, dtype, shape, raw bytes), written here from the format's definition.
let private safetensors (tensors: (string * string * int list * byte[]) list) =
    let mutable offset = 0
    let entries =
        [ for name, dtype, shape, data in tensors do
              let shapeText = String.Join(",", shape)
              yield $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{shapeText}],\"data_offsets\":[{offset},{offset + data.Length}]}}"
              offset <- offset + data.Length ]
    let header = Encoding.UTF8.GetBytes("{" + String.Join(",", entries) + "}")
    Array.concat [ BitConverter.GetBytes(uint64 header.Length); header; yield! tensors |> List.map (fun (_, _, _, d) -> d) ]

let private doubles (values: double seq) = values |> Seq.collect BitConverter.GetBytes |> Array.ofSeq

/// The attention's state_dict rewritten: each key with a new name, dtype, shape and bytes (or dropped).
let private attentionFile (edit: string * DoubleTensor -> (string * string * int list * byte[]) option) =
    PyTorchWeights.Read(fixture "attention.safetensors") |> Seq.choose (fun p -> edit (p.Key, p.Value)) |> List.ofSeq |> safetensors

let private keep (key: string, t: DoubleTensor) = Some(key, "F64", List.ofSeq t.Shape, doubles t.Data)

/// Every weight of a graph as (node, slot, bits), for bit-exact comparison.
let private bits (g: Graph) =
    [ for n in g.Nodes do
          for s in n.WeightSlots do
              yield n.Name, s.Name, (if isNull (box s.Value) then None else Some(s.Value.Shape, s.Value.Data |> Seq.map BitConverter.DoubleToInt64Bits |> List.ofSeq)) ]

let private marker = "/tmp/duality-pytorch-fixture-pwned"

let tests =
    testList "pytorch" [
        for family, block in
            [ "gla", Blocks.Gla(2, 2, 2, 3, 16.0); "retnet", Blocks.RetNet(2, 2, 3); "mlstm", Blocks.Mlstm(2, 2, 2)
              "mamba2", Blocks.Mamba2(4, 2, 2, 1, 4) ] do
            testCase (sprintf "%s: the block with make_blocks.py's weights computes its PyTorch recurrence's output (float64, 1e-10), in every form" family) <| fun () ->
                // make_blocks.py writes each family from its paper's equations as a step-by-step recurrence, independently of this library
                let g = PyTorchWeights.Load(Model.Input("x", 4).Then(block).Build(), fixture (family + ".safetensors"))
                let io = PyTorchWeights.Read(fixture (family + "-io.safetensors"))
                let x, expected = sequence io.["x"], sequence io.["y"]
                let forms =
                    noGrad (fun () ->
                        [ yield "reference", (ReferenceEvaluator.Evaluate(g, [| x |])).[0]
                          for mode in [ ExecutionMode.Auto; ExecutionMode.PerNode; ExecutionMode.TorchOps ] do
                              yield sprintf "%A" mode, ofTensor (g.Compile(CompileOptions(DType = torch.ScalarType.Float64, Execution = mode)).Forward([| toTensor torch.ScalarType.Float64 x |]).[0])
                          yield "step form", ofTensor (g.Compile(CompileOptions.Float64).ToStepForm().Unroll([| toTensor torch.ScalarType.Float64 x |]).[0])
                          yield "lowered", (ReferenceEvaluator.Evaluate(LowerAttention.ToGatedRnn(g), [| x |])).[0] ])
                for form, actual in forms do
                    let error = scaledError expected actual
                    if error > 1e-10 then failtestf "%s: scaled error %.3e against PyTorch's output exceeds 1e-10" form error

        for format, file in [ "safetensors", "attention.safetensors"; ".pt", "attention.pt" ] do
            test $"the PyTorch attention ({format}) loads and computes PyTorch's outputs (float64, 1e-10)" {
                let loaded = PyTorchWeights.Load(attentionGraph (), fixture file, attentionMapping)
                matches 1e-10 "attention" loaded
            }
            test $"the lowered gated RNN of the loaded attention ({format}) computes PyTorch's outputs, both constructions" {
                let loaded = PyTorchWeights.Load(attentionGraph (), fixture file, attentionMapping)
                for construction in [ Construction.Full; Construction.Compressed ] do
                    let lowering = LowerAttention.Run(loaded, construction)
                    Expect.isEmpty lowering.Refused "nothing refused"
                    Expect.isFalse (lowering.Graph.Nodes |> Seq.exists (fun n -> n :? Attention)) "no attention left"
                    matches 1e-10 "attention" lowering.Graph
            }
        for format, file in [ "safetensors", "gated.safetensors"; ".pt", "gated.pt" ] do
            test $"the PyTorch gated RNN ({format}) loads with nn.Linear's layout untransposed and computes PyTorch's outputs (float64, 1e-10)" {
                let g = gatedGraph ()
                matches 1e-10 "gated" (PyTorchWeights.Load(g, fixture file, gatedMapping g))
            }
        test "both formats of a state_dict read the same float64 values, and float32 reads exactly widened" {
            let pt = PyTorchWeights.Read(fixture "attention.pt")
            let st = PyTorchWeights.Read(fixture "attention.safetensors")
            let single = PyTorchWeights.Read(fixture "attention32.safetensors")
            Expect.equal (Set.ofSeq pt.Keys) (Set.ofSeq st.Keys) "keys"
            for key in pt.Keys do
                Expect.equal pt.[key] st.[key] key
                Expect.equal (Array.ofSeq single.[key].Data) (st.[key].Data |> Seq.map (fun v -> float (float32 v)) |> Array.ofSeq) key
            matches 1e-6 "attention" (PyTorchWeights.Load(attentionGraph (), fixture "attention32.safetensors", attentionMapping))
        }
        for format in [ PyTorchFormat.SafeTensors; PyTorchFormat.Pickle ] do
            testPropertyWithConfig config $"save then load ({format}) round-trips every weight bit-exactly, by node names" <|
                Prop.forAll arbCase (fun c ->
                    withFile ".bin" (fun path ->
                        PyTorchWeights.Save(c.Graph, path, format)
                        let loaded = PyTorchWeights.Load(build c.Architecture, path)
                        loaded = c.Graph && bits loaded = bits c.Graph))
            testPropertyWithConfig config $"save then load ({format}) through a mapping of other names round-trips bit-exactly" <|
                Prop.forAll arbCase (fun c ->
                    let mapping =
                        c.Graph.Nodes
                        |> Seq.collect (fun n -> n.WeightSlots |> Seq.filter (fun s -> not (isNull (box s.Value))) |> Seq.map (fun s -> n.Name, s.Name))
                        |> Seq.indexed
                        |> Seq.fold (fun (m: WeightMapping) (i, (node, slot)) -> m.Map($"layers.{i}.{slot.ToLowerInvariant()}", node, slot)) WeightMapping.Empty
                    withFile ".bin" (fun path ->
                        PyTorchWeights.Save(c.Graph, path, format, mapping)
                        Expect.equal (Set.ofSeq (PyTorchWeights.Read(path).Keys)) (Set.ofSeq mapping.Targets.Keys) "the file holds the mapped keys"
                        let loaded = PyTorchWeights.Load(build c.Architecture, path, mapping)
                        loaded = c.Graph && bits loaded = bits c.Graph))
        test "a graph saved as .pt is a torch.save archive whose pickle names only the globals torch.load(weights_only=True) allows" {
            let g = PyTorchWeights.Load(attentionGraph (), fixture "attention.pt", attentionMapping)
            withFile ".pt" (fun path ->
                PyTorchWeights.Save(g, path, PyTorchFormat.Pickle, attentionMapping)
                use archive = ZipFile.OpenRead path
                let pickle = archive.Entries |> Seq.find (fun e -> e.FullName.EndsWith "/data.pkl")
                use stream = pickle.Open()
                use memory = new MemoryStream()
                stream.CopyTo memory
                let text = Encoding.Latin1.GetString(memory.ToArray())
                for expected in [ "collections\nOrderedDict\n"; "torch._utils\n_rebuild_tensor_v2\n"; "torch\nDoubleStorage\n" ] do
                    Expect.stringContains text expected "the pickle's globals"
                matches 1e-10 "attention" (PyTorchWeights.Load(attentionGraph (), path, attentionMapping)))
        }
        test "a mapped key missing from the file is a GraphException naming the key, the node and the slot" {
            let renamed =
                WeightMapping.Empty.Map("q_proj.weight", "attn", "Query").Map("k_proj.weight", "attn", "Key")
                    .Map("v_proj.weight", "attn", "Value").Map("out_proj.weight", "attn", "Output").Ignore("o_proj.weight")
            refusedBy<GraphException> [ "missing key"; "'attn'"; "'out_proj.weight'"; "Output [4, 4]"; "o_proj.weight" ] (fun () ->
                PyTorchWeights.Load(attentionGraph (), fixture "attention.safetensors", renamed) |> ignore)
            withFile ".safetensors" (fun path ->
                File.WriteAllBytes(path, attentionFile (fun (k, t) -> if k = "o_proj.weight" then None else keep (k, t)))
                refusedBy<GraphException> [ "missing key"; "'o_proj.weight'"; "'attn'"; "Output" ] (fun () ->
                    PyTorchWeights.Load(attentionGraph (), path, attentionMapping) |> ignore))
        }
        test "a key of the file the mapping does not name is a GraphException naming the key and the fix" {
            let partial = WeightMapping.Empty.Map("q_proj.weight", "attn", "Query").Map("k_proj.weight", "attn", "Key").Map("v_proj.weight", "attn", "Value")
            refusedBy<GraphException> [ "unmapped key"; "'o_proj.weight'"; ".Ignore(\"o_proj.weight\")" ] (fun () ->
                PyTorchWeights.Load(attentionGraph (), fixture "attention.pt", partial) |> ignore)
            refusedBy<GraphException> [ "unmapped key"; "'q_proj.weight'"; "node.Slot" ] (fun () ->
                PyTorchWeights.Load(attentionGraph (), fixture "attention.pt") |> ignore)
        }
        test "a tensor of the wrong shape is a GraphException naming the key, the node, the slot, both shapes and the fix" {
            let swapped =
                WeightMapping.Empty.Map("q_proj.weight", "attn", "Value").Map("k_proj.weight", "attn", "Key")
                    .Map("v_proj.weight", "attn", "Query").Map("o_proj.weight", "attn", "Output")
            refusedBy<GraphException> [ "weight shape mismatch"; "'attn'"; "'q_proj.weight'"; "Value [4, 4]"; "[6, 4]"; "hint:" ] (fun () ->
                PyTorchWeights.Load(attentionGraph (), fixture "attention.safetensors", swapped) |> ignore)
            withFile ".safetensors" (fun path ->
                let transpose (t: DoubleTensor) = [ for c in 0 .. t.Shape.[1] - 1 do for r in 0 .. t.Shape.[0] - 1 -> t.[r, c] ]
                File.WriteAllBytes(path, attentionFile (fun (k, t) ->
                    if k = "q_proj.weight" then Some(k, "F64", [ 4; 6 ], doubles (transpose t)) else keep (k, t)))
                refusedBy<GraphException> [ "weight shape mismatch"; "'q_proj.weight' of shape [4, 6]"; "Query [6, 4]"; "transpose" ] (fun () ->
                    PyTorchWeights.Load(attentionGraph (), path, attentionMapping) |> ignore))
        }
        test "a mapped tensor that is not floating point is a GraphFileException naming its dtype and key" {
            withFile ".safetensors" (fun path ->
                File.WriteAllBytes(path, attentionFile (fun (k, t) ->
                    if k = "k_proj.weight" then Some(k, "I64", List.ofSeq t.Shape, t.Data |> Seq.collect (int64 >> BitConverter.GetBytes) |> Array.ofSeq)
                    else keep (k, t)))
                refusedBy<GraphFileException> [ "'k_proj.weight'"; "I64"; "floating-point" ] (fun () ->
                    PyTorchWeights.Load(attentionGraph (), path, attentionMapping) |> ignore)
                // ignored, it is not read
                let ignoring = WeightMapping.Empty.Map("q_proj.weight", "attn", "Query").Ignore("k_proj.weight").Map("v_proj.weight", "attn", "Value")
                                   .Map("o_proj.weight", "attn", "Output")
                let g = InitializeWeights.Run(attentionGraph (), 1)
                let loaded = PyTorchWeights.Load(g, path, ignoring)
                let key (graph: Graph) = (graph.Nodes.[1] :?> Attention).Weights.Key
                Expect.equal (key loaded) (key g) "the ignored key leaves the slot")
        }
        test "a mapping naming an unknown node or slot is a GraphException naming it and listing the choices" {
            refusedBy<GraphException> [ "unknown node"; "'atn'"; "attn" ] (fun () ->
                PyTorchWeights.Load(attentionGraph (), fixture "attention.pt", attentionMapping.Ignore("x").Map("extra", "atn", "Query")) |> ignore)
            refusedBy<GraphException> [ "unknown weight slot"; "'Queries'"; "Query, Key, Value, Output" ] (fun () ->
                PyTorchWeights.Load(attentionGraph (), fixture "attention.pt",
                                    WeightMapping.Empty.Map("q_proj.weight", "attn", "Queries").Map("k_proj.weight", "attn", "Key")
                                        .Map("v_proj.weight", "attn", "Value").Map("o_proj.weight", "attn", "Output")) |> ignore)
            Expect.throwsT<ArgumentException> (fun () -> attentionMapping.Map("q_proj.weight", "attn", "Key") |> ignore) "a key mapped twice"
            Expect.throwsT<ArgumentException> (fun () -> attentionMapping.Map("other", "attn", "Key") |> ignore) "a slot filled twice"
        }
        for file, global' in [ "hostile-os-system.pt", "os.system"; "hostile-builtins-eval.pt", "builtins.eval" ] do
            test $"a pickle calling {global'} is refused before anything runs, naming the global" {
                File.Delete marker
                refusedBy<GraphFileException> [ $"'{global'}'"; "nothing in the file was run"; "weights_only=True" ] (fun () ->
                    PyTorchWeights.Load(attentionGraph (), fixture file, attentionMapping) |> ignore)
                refusedBy<GraphFileException> [ $"'{global'}'" ] (fun () -> PyTorchWeights.Read(fixture file) |> ignore)
                Expect.isFalse (File.Exists marker) "the command did not run"
            }
        test "pickles building objects by other means (INST, OBJ, a global called with other arguments) are refused naming them" {
            let archive (pickle: byte[]) =
                use memory = new MemoryStream()
                (use zip = new ZipArchive(memory, ZipArchiveMode.Create, true)
                 use entry = zip.CreateEntry("evil/data.pkl").Open()
                 entry.Write(pickle, 0, pickle.Length))
                memory.ToArray()
            let ascii (s: string) = Encoding.Latin1.GetBytes s
            for pickle, expected in
                [ ascii "(S'echo pwned'\nisubprocess\nPopen\n.", "'subprocess.Popen'"
                  ascii "\u0080\u0002cposix\nsystem\nq\u0000.", "'posix.system'"
                  ascii "\u0080\u0002ctorch._utils\n_rebuild_tensor_v2\nK\u0001\u0085R.", "_rebuild_tensor_v2 takes 6 or 7 arguments"
                  ascii "\u0080\u0002ccollections\nOrderedDict\nK\u0001K\u0002\u0086\u0085R.", "OrderedDict is called with items"
                  ascii "\u0080\u0002(ccollections\nOrderedDict\no.", "OBJ"
                  ascii "\u0080\u0002\u0082\u0001.", "EXT" ] do
                withFile ".pt" (fun path ->
                    File.WriteAllBytes(path, archive pickle)
                    refusedBy<GraphFileException> [ expected ] (fun () -> PyTorchWeights.Read path |> ignore))
        }
        test "a storage of a dtype that is not floating point, or newer than this library, is refused by its dtype when mapped" {
            let rewritten (storage: string) =
                use source = ZipFile.OpenRead(fixture "attention.pt")
                use memory = new MemoryStream()
                (use target = new ZipArchive(memory, ZipArchiveMode.Create, true)
                 for entry in source.Entries do
                     use input = entry.Open()
                     use copy = new MemoryStream()
                     input.CopyTo copy
                     let bytes =
                         if entry.FullName.EndsWith "/data.pkl" then
                             Encoding.Latin1.GetBytes(Encoding.Latin1.GetString(copy.ToArray()).Replace("torch\nDoubleStorage\n", $"torch\n{storage}\n"))
                         else copy.ToArray()
                     use output = target.CreateEntry(entry.FullName).Open()
                     output.Write(bytes, 0, bytes.Length))
                memory.ToArray()
            for storage, dtype in [ "LongStorage", "I64"; "Float8_e4m3fnStorage", "Float8_e4m3fnStorage" ] do
                withFile ".pt" (fun path ->
                    File.WriteAllBytes(path, rewritten storage)
                    // every tensor shares the storage type (the pickle memoizes its global); the first mapped key in order is named
                    refusedBy<GraphFileException> [ "'k_proj.weight'"; $"dtype {dtype}"; "floating-point" ] (fun () ->
                        PyTorchWeights.Load(attentionGraph (), path, attentionMapping) |> ignore))
        }
        testPropertyWithConfig { config with maxTest = 300 } "a damaged .pt or .safetensors loads an equal graph or is refused with the library's exceptions" <|
            Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.elements [ "attention.pt"; "attention.safetensors" ]) (Gen.choose (0, Int32.MaxValue)) (Gen.choose (1, 4)))) (fun (file, seed, flips) ->
                let bytes = File.ReadAllBytes(fixture file)
                let random = Random seed
                let damaged =
                    if random.Next 4 = 0 then bytes.[.. random.Next bytes.Length - 1]
                    else
                        let copy = Array.copy bytes
                        for _ in 1 .. flips do copy.[random.Next copy.Length] <- byte (random.Next 256)
                        copy
                withFile ".bin" (fun path ->
                    File.WriteAllBytes(path, damaged)
                    try
                        PyTorchWeights.Load(attentionGraph (), path, attentionMapping) |> ignore
                        true
                    with
                    | :? GraphFileException | :? GraphException -> true
                    | e -> failwithf "%s: %O" file e))
        test "files that are not state_dicts are GraphFileExceptions saying so" {
            refusedBy<GraphFileException> [ "does not exist" ] (fun () -> PyTorchWeights.Read(fixture "absent.pt") |> ignore)
            withFile ".pt" (fun path ->
                File.WriteAllBytes(path, Encoding.Latin1.GetBytes "\u0080\u0002\u008a\nlegacy torch.save")
                refusedBy<GraphFileException> [ "legacy format" ] (fun () -> PyTorchWeights.Read path |> ignore))
            withFile ".pt" (fun path ->
                File.WriteAllBytes(path, File.ReadAllBytes(fixture "attention.pt").[.. 200])
                refusedBy<GraphFileException> [ "malformed" ] (fun () -> PyTorchWeights.Read path |> ignore))
        }
    ]
