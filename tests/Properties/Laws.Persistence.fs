/// Laws of graph files: saving and loading round-trips exactly for every node kind; any change to a saved
/// file is refused with a reason (a GraphFileException) and never loads another graph; saving fails as a
/// GraphFileException naming the path.
module Duality.Properties.LawsPersistence

open System
open System.Buffers.Binary
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open Expecto
open FsCheck
open FsCheck.FSharp
open Duality.Ir
open Duality.Persistence
open Duality.Passes
open Duality.Testing.Generators

let config = { FsCheckConfig.defaultConfig with maxTest = 100; endSize = 64 }

let private temporaryFile () = Path.Combine(Path.GetTempPath(), $"duality-{Guid.NewGuid():N}.safetensors")

let private roundTrip (g: Graph) =
    let path = temporaryFile ()
    try
        GraphFile.Save(g, path)
        GraphFile.Load path
    finally
        File.Delete path

let private bytesOf (g: Graph) =
    let path = temporaryFile ()
    try
        GraphFile.Save(g, path)
        File.ReadAllBytes path
    finally
        File.Delete path

/// Loads bytes written to a file: Ok graph, or Error with the exception.
let private load (bytes: byte[]) =
    let path = temporaryFile ()
    try
        File.WriteAllBytes(path, bytes)
        try Ok(GraphFile.Load path) with e -> Error e
    finally
        File.Delete path

let private refusedBytes (contains: string) (bytes: byte[]) =
    match load bytes with
    | Ok _ -> failtest "the damaged file was loaded"
    | Error(:? GraphFileException as e) -> Expect.stringContains e.Message contains "the reason"
    | Error e -> failtestf "expected a GraphFileException, got %O" e

let private refused (contains: string) (write: string -> unit) =
    let path = temporaryFile ()
    try
        write path
        try
            GraphFile.Load path |> ignore
            failtest "the damaged file was loaded"
        with :? GraphFileException as e -> Expect.stringContains e.Message contains "the reason"
    finally
        File.Delete path

/// A small graph with a factor, a decay, an activation, a slice and an epsilon, and its weights.
let private sample () =
    InitializeWeights.Run(
        Duality.Builders.Model.Input("x", 3).Projection(4, name = "p")
            .Attention(1, 2, 3, decay = 0.9, name = "a").Activation(ActivationKind.ReLU, name = "act")
            .Slice(1, 2, name = "s").LayerNorm(epsilon = 1e-4, name = "ln").RmsNorm(name = "rms").Scale(0.5, name = "f")
            .Output().Build(), 1)

/// A saved file's parts: the header as JSON and the tensor bytes.
let private split (bytes: byte[]) =
    let length = int (BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan bytes))
    JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, length)).AsObject(), bytes.[8 + length ..]

let private zeros = String('0', 64)

let private num (x: float) : JsonNode = JsonValue.Create x
let private str (x: string) : JsonNode = JsonValue.Create x

let private show (json: JsonNode) =
    let text = if isNull json then "null" else json.ToJsonString()
    if text.Length <= 40 then text else text.[.. 36] + "..."

/// A file from a header and data, its checksum left as the header has it (stale after an edit).
let private unsigned (header: JsonObject) (data: byte[]) =
    let text = Encoding.UTF8.GetBytes(header.ToJsonString())
    Array.concat [ BitConverter.GetBytes(uint64 text.Length); text; data ]

/// A file from a header and data with a fresh version 2 checksum, computed here from its definition:
/// SHA-256 of the whole file with the 64 digits of __metadata__.sha256 read as '0'.
let private signed (header: JsonObject) (data: byte[]) =
    match header.["__metadata__"] with
    | :? JsonObject as metadata ->
        metadata.["sha256"] <- JsonValue.Create zeros
        let text = header.ToJsonString()
        let prefix = BitConverter.GetBytes(uint64 (Encoding.UTF8.GetByteCount text))
        let digits = Convert.ToHexString(SHA256.HashData(Array.concat [ prefix; Encoding.UTF8.GetBytes text; data ]))
        let text = text.Replace($"\"sha256\":\"{zeros}\"", $"\"sha256\":\"{digits}\"")
        Array.concat [ prefix; Encoding.UTF8.GetBytes text; data ]
    | _ -> unsigned header data

/// Edits the graph description (parsed) and the header of a saved file; returns the new header and data.
let private edit (change: JsonObject -> JsonObject -> unit) (bytes: byte[]) =
    let header, data = split bytes
    let metadata = header.["__metadata__"].AsObject()
    let graph = JsonNode.Parse(string metadata.["graph"]).AsObject()
    change header graph
    metadata.["graph"] <- JsonValue.Create(graph.ToJsonString())
    header, data

let private fieldsOf (name: string) (graph: JsonObject) =
    graph.["nodes"].AsArray() |> Seq.map (fun n -> n.["fields"].AsObject()) |> Seq.find (fun f -> string f.["Name"] = name)

let private setField node (field: string) (value: JsonNode) = edit (fun _ g -> (fieldsOf node g).[field] <- value)

let private stale change bytes = edit change bytes ||> unsigned
let private resigned change bytes = edit change bytes ||> signed

let private metadataEdit (key: string) (value: string) = fun (header: JsonObject) (_: JsonObject) -> header.["__metadata__"].[key] <- JsonValue.Create value

/// The names of the tensors in header order.
let private tensorNames (header: JsonObject) = header |> Seq.map (fun p -> p.Key) |> Seq.filter ((<>) "__metadata__") |> List.ofSeq

/// A leaf of a JSON tree and how to replace it.
type private Leaf = { Value: JsonNode; Set: JsonNode -> unit }

let rec private leaves (node: JsonNode) : Leaf list =
    match node with
    | :? JsonObject as o ->
        [ for p in List.ofSeq o do
              match p.Value with
              | :? JsonObject | :? JsonArray -> yield! leaves p.Value
              | v -> yield { Value = v; Set = fun x -> o.[p.Key] <- x } ]
    | :? JsonArray as a ->
        [ for i in 0 .. a.Count - 1 do
              match a.[i] with
              | :? JsonObject | :? JsonArray -> yield! leaves a.[i]
              | v -> yield { Value = v; Set = fun x -> a.[i] <- x } ]
    | _ -> []

let rec private containers (node: JsonNode) : JsonNode list =
    match node with
    | :? JsonObject as o -> node :: [ for p in o do if not (isNull p.Value) then yield! containers p.Value ]
    | :? JsonArray as a -> node :: [ for x in a do if not (isNull x) then yield! containers x ]
    | _ -> []

let private strangeStrings = [| "abc"; "1.0"; "0"; "-1"; "1"; "2"; "3"; "F32"; "NaN"; ""; "Bogus"; "Identity" |]

let private enums = [| typeof<ActivationKind>; typeof<StateKind>; typeof<ComplexReadout>; typeof<AttentionKernel> |] |> Array.map Enum.GetNames

/// A plausible change of one field of one node: a real number scaled, an enum name swapped for another of
/// its enum, a flag flipped (else any field: an integer moved by one, a source or name swapped). Often a
/// different valid graph, which only the checksum tells from the saved one.
let private mutateField (random: Random) (graph: JsonObject) =
    let pick (xs: 'a[]) = xs.[random.Next xs.Length]
    let names = [| for n in graph.["nodes"].AsArray() -> string n.["fields"].["Name"] |]
    let enumOf (v: JsonNode) = enums |> Array.tryFind (Array.contains (string v))
    let free (v: JsonNode) =
        match v with
        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.Number -> v.GetValue<double>() <> Math.Round(v.GetValue<double>())
        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> (enumOf v).IsSome
        | :? JsonValue as v -> v.GetValueKind() = JsonValueKind.True || v.GetValueKind() = JsonValueKind.False
        | _ -> false
    let all = [| for n in graph.["nodes"].AsArray() do for p in n.["fields"].AsObject() -> n.["fields"].AsObject(), p.Key, p.Value |]
    let fields, key, value = match all |> Array.filter (fun (_, _, v) -> free v) with [||] -> pick all | some -> if random.Next 4 = 0 then pick all else pick some
    let replacement : JsonNode =
        match value with
        | null -> num 1.0
        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.Number ->
            let x = v.GetValue<double>()
            num (pick [| x + 1.0; x - 1.0; 0.5 * x; 2.0 * x |])
        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> str (pick (defaultArg (enumOf v) names))
        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.True -> JsonValue.Create false
        | :? JsonValue -> JsonValue.Create true
        | _ -> null
    let before = show value
    fields.[key] <- replacement
    $"field {key}: replaced {before} by {show replacement}"

/// One random edit of a header or graph description: a number, a string (names, kinds, enums, dtype, version),
/// a flag, a null, a removed key, an added key, or two swapped list items (nodes, dims, offsets).
let private mutateJson (random: Random) (header: JsonObject) (graph: JsonObject) =
    let target = if random.Next 2 = 0 then graph :> JsonNode else header :> JsonNode
    let pool = Array.append strangeStrings [| for l in leaves graph do if not (isNull l.Value) && l.Value.GetValueKind() = JsonValueKind.String then string l.Value |]
    let pick (xs: 'a[]) = xs.[random.Next xs.Length]
    match random.Next 10 with
    | 0 ->
        match containers target |> List.choose (function :? JsonObject as o when o.Count > 0 -> Some o | _ -> None) |> Array.ofList with
        | [||] -> "nothing"
        | objects ->
            let o = pick objects
            let key = (Seq.item (random.Next o.Count) o).Key
            o.Remove key |> ignore
            $"removed key {key}"
    | 1 ->
        match containers target |> List.choose (function :? JsonArray as a when a.Count > 1 -> Some a | _ -> None) |> Array.ofList with
        | [||] -> "nothing"
        | arrays ->
            let a = pick arrays
            let i, j = random.Next a.Count, random.Next a.Count
            let x, y = a.[i].DeepClone(), a.[j].DeepClone()
            a.[i] <- y
            a.[j] <- x
            $"swapped items {i} and {j} of {show a}"
    | 2 ->
        match containers target |> List.choose (function :? JsonObject as o -> Some o | _ -> None) |> Array.ofList with
        | [||] -> "nothing"
        | objects ->
            (pick objects).["Extra"] <- JsonValue.Create 1
            "added key Extra"
    | _ ->
        match leaves target |> Array.ofList with
        | [||] -> "nothing"
        | all ->
            let leaf = pick all
            let replacement : JsonNode =
                match leaf.Value with
                | null -> pick [| num 0.0; str "x"; JsonValue.Create true |]
                | v when v.GetValueKind() = JsonValueKind.Number ->
                    let x = v.GetValue<double>()
                    JsonValue.Create(pick [| x + 1.0; x - 1.0; 2.0 * x; 0.0; -x; x + 0.5; 1e300; 2147483648.0; x + 8.0 |])
                | v when v.GetValueKind() = JsonValueKind.String ->
                    let s = string v
                    JsonValue.Create(pick [| pick pool; pick pool; s + "x"; s.ToLowerInvariant() |])
                | v when v.GetValueKind() = JsonValueKind.True -> JsonValue.Create false
                | v when v.GetValueKind() = JsonValueKind.False -> JsonValue.Create true
                | _ -> null
            let before = show leaf.Value
            leaf.Set replacement
            $"replaced {before} by {show replacement}"

type private Outcome =
    | LoadedEqual
    | LoadedOther
    | Refused

/// The mutations the fuzzing law tries, each with whether its checksum is made fresh again.
let private mutations : (string * bool * (Random -> byte[] -> byte[] * string)) list =
    let flipIn lo hi (random: Random) (bytes: byte[]) =
        let copy = Array.copy bytes
        let i = lo + random.Next(hi - lo)
        let bit = 1uy <<< random.Next 8
        copy.[i] <- copy.[i] ^^^ bit
        copy, $"flipped bit {bit} of byte {i}"
    let jsonEdit mutate write (random: Random) bytes =
        let mutable what = ""
        let header, data = edit (fun h g -> what <- mutate random h g) bytes
        write header data, what
    let headerEnd (bytes: byte[]) = 8 + int (BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan bytes))
    [ "flip a length byte", false, (fun r b -> flipIn 0 8 r b)
      "flip a header byte", false, (fun r b -> flipIn 8 (headerEnd b) r b)
      "flip a data byte", false, (fun r b -> if headerEnd b = b.Length then flipIn 8 (headerEnd b) r b else flipIn (headerEnd b) b.Length r b)
      "truncate", false, (fun r b -> let n = r.Next b.Length in b.[.. n - 1], $"kept {n} of {b.Length} bytes")
      "append bytes", false, (fun r b -> Array.append b (Array.init (1 + r.Next 16) (fun _ -> byte (r.Next 256))), "appended bytes")
      "edit JSON (checksum stale)", false, jsonEdit mutateJson unsigned
      "edit JSON (checksum made fresh)", true, jsonEdit mutateJson signed
      "edit a node's field (checksum stale)", false, jsonEdit (fun r _ g -> mutateField r g) unsigned
      "edit a node's field (checksum made fresh)", true, jsonEdit (fun r _ g -> mutateField r g) signed ]

let fuzzSeed = 20250611

/// The kinds of NodeKinds.All and graphs holding each (with weights and without), from seeded generated cases.
let private graphsByKind () =
    let samples = Gen.sampleWithSeed (Rnd(uint64 fuzzSeed)) 40 300 architecture |> Array.map (fun a -> a, build a)
    [ for kind in NodeKinds.All ->
          kind, samples |> Array.filter (fun (_, g) -> (kindsOf g).Contains kind.Name) |> Array.truncate 6 ]

/// A type shaped like a record (primary constructor, properties, Deconstruct) with a field graph files cannot hold.
type UnsupportedRecord(Name: string, Ratio: float32) =
    member _.Name = Name
    member _.Ratio = Ratio
    member _.Deconstruct([<Runtime.InteropServices.Out>] name: byref<string>, [<Runtime.InteropServices.Out>] ratio: byref<float32>) =
        name <- Name
        ratio <- Ratio

let tests =
    testList "persistence" [
        testPropertyWithConfig config "save then load gives back an equal graph, weights and all" <|
            Prop.forAll arbCase (fun c -> roundTrip c.Graph = c.Graph)

        testPropertyWithConfig config "save then load keeps graphs without weights without weights" <|
            Prop.forAll arbArchitecture (fun a ->
                let g = build a
                roundTrip g = g)

        testPropertyWithConfig { config with maxTest = 40 } "lowered attention round-trips" <|
            Prop.forAll arbLayer (fun l ->
                let g = LowerAttention.ToGatedRnn(attentionGraph l)
                roundTrip g = g)

        testCase "every node kind round-trips, with weights and without" <| fun () ->
            for kind, graphs in graphsByKind () do
                if graphs.Length = 0 then failtestf "the generator never produced a %s node; extend Generators.fs" kind.Name
                for architecture, bare in graphs do
                    let weighted = InitializeWeights.Run(bare, 1, WeightInit.Perturbed)
                    for g in [ weighted; bare ] do
                        let loaded = roundTrip g
                        if loaded <> g then failtestf "a graph with %s changed in a save and load:\n%A\nsaved\n%O\nloaded\n%O" kind.Name architecture g loaded

        testCase "file fuzzing: random byte flips, truncations and JSON edits either load an equal graph or raise GraphFileException" <| fun () ->
            let random = Random fuzzSeed
            let graphs = Gen.sampleWithSeed (Rnd(uint64 fuzzSeed)) 30 24 architecture |> Array.map (fun a -> InitializeWeights.Run(build a, 1, WeightInit.Perturbed))
            let files = graphs |> Array.map bytesOf
            let outcomes = Collections.Generic.Dictionary<string * Outcome, int>()
            let count key = match outcomes.TryGetValue key with | true, n -> n | _ -> 0
            for round in 0 .. 47 do
                for name, fresh, mutate in mutations do
                    let i = random.Next graphs.Length
                    let bytes, what = mutate random files.[i]
                    let context () = $"seed {fuzzSeed}, round {round}, {name}: {what}\n{graphs.[i]}"
                    let outcome =
                        match load bytes with
                        | Ok g when g = graphs.[i] -> LoadedEqual
                        | Ok g when fresh ->
                            // a re-signed edit may describe another valid graph; it must be a whole one
                            if roundTrip g <> g then failtestf "a loaded edit does not round-trip (%s)" (context ())
                            LoadedOther
                        | Ok g -> failtestf "a changed file loaded another graph (%s):\n%O" (context ()) g
                        | Error(:? GraphFileException) -> Refused
                        | Error e -> failtestf "a changed file raised %s, not GraphFileException (%s):\n%O" (e.GetType().Name) (context ()) e
                    outcomes.[(name, outcome)] <- count (name, outcome) + 1
            // the fuzzer reaches the reader's success path too: some re-signed edits are other valid graphs
            let otherGraphs = mutations |> List.sumBy (fun (name, _, _) -> count (name, LoadedOther))
            Expect.isGreaterThan otherGraphs 0 "some re-signed edits load another valid graph"
            for name, _, _ in mutations do
                Expect.isGreaterThan (count (name, Refused)) 0 $"some '{name}' files are refused"

        testCase "saving over a file replaces it and leaves no temporary files" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let path = Path.Combine(directory, "model.safetensors")
            let first = InitializeWeights.Run(Duality.Builders.Model.Input("x", 2).Projection(3).Build(), 1)
            GraphFile.Save(first, path)
            GraphFile.Save(InitializeWeights.Run(Duality.Builders.Model.Input("x", 2).Projection(5).Build(), 2), path)
            Expect.equal (Directory.GetFiles directory).Length 1 "only the graph file"
            Expect.equal ((GraphFile.Load path).WidthOf(NodeId 1)) 5 "the new graph"
            Directory.Delete(directory, true)

        testCase "a truncated file is refused" <| fun () ->
            let bytes = bytesOf (sample ())
            refusedBytes "truncated" bytes.[.. 5]
            refusedBytes "truncated" bytes.[.. bytes.Length - 9]
            refusedBytes "truncated" bytes.[.. 40]

        testCase "a damaged tensor byte is refused by the checksum" <| fun () ->
            let bytes = bytesOf (sample ())
            bytes.[bytes.Length - 3] <- bytes.[bytes.Length - 3] ^^^ 0x40uy
            refusedBytes "checksum" bytes

        testCase "a file that is not a graph file is refused" <| fun () ->
            refused "header length" (fun path -> File.WriteAllBytes(path, Array.init 100 byte))
            refused "not valid JSON" (fun path -> File.WriteAllBytes(path, Array.append (BitConverter.GetBytes 5UL) "{oops"B))
            refused "not a JSON object" (fun path -> File.WriteAllBytes(path, Array.append (BitConverter.GetBytes 2UL) "[]"B))
            refused "no __metadata__" (fun path -> File.WriteAllBytes(path, Array.append (BitConverter.GetBytes 2UL) "{}"B))
            refused "does not exist" ignore
            let folder = Directory.CreateTempSubdirectory("duality-").FullName
            try
                try
                    GraphFile.Load folder |> ignore
                    failtest "a folder was loaded"
                with :? GraphFileException as e -> Expect.stringContains e.Message "folder" "the reason"
            finally
                Directory.Delete folder
            refused "not valid JSON" (fun path ->
                let json = """{"a":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"a":{}}"""B
                File.WriteAllBytes(path, Array.concat [ BitConverter.GetBytes(uint64 json.Length); json; Array.zeroCreate 8 ]))

        // Integrity: the checksum covers the header, so no hand edit loads.
        testCase "an edited factor, decay, activation, slice start or epsilon is refused by the checksum" <| fun () ->
            let bytes = bytesOf (sample ())
            for node, field, value in
                [ "f", "Factor", num 0.25; "a", "Decay", num 0.8; "act", "Kind", str "GELU"
                  "s", "Start", num 0.0; "ln", "Epsilon", num 1e-3; "rms", "Epsilon", num 1e-5 ] do
                refusedBytes "checksum" (bytes |> setField node field value ||> unsigned)

        testCase "swapped or overlapping data_offsets are refused, even with a fresh checksum" <| fun () ->
            let bytes = bytesOf (sample ())
            let swap (header: JsonObject) (_: JsonObject) =
                match tensorNames header with
                | a :: b :: _ ->
                    let x, y = header.[a].["data_offsets"].DeepClone(), header.[b].["data_offsets"].DeepClone()
                    header.[a].["data_offsets"] <- y
                    header.[b].["data_offsets"] <- x
                | _ -> failtest "two tensors"
            let overlap (header: JsonObject) (_: JsonObject) =
                let second = (tensorNames header).[1]
                let offsets = header.[second].["data_offsets"].AsArray()
                header.[second].["data_offsets"] <- JsonArray(JsonValue.Create(offsets.[0].GetValue<int64>() - 8L), JsonValue.Create(offsets.[1].GetValue<int64>() - 8L))
            refusedBytes "begins at byte" (stale swap bytes)
            refusedBytes "begins at byte" (resigned swap bytes)
            refusedBytes "inside the tensor before it" (resigned overlap bytes)

        testCase "a node pointed at another node's tensor is refused, even with a fresh checksum" <| fun () ->
            let bytes = bytesOf (sample ())
            let point (_: JsonObject) (graph: JsonObject) =
                (fieldsOf "ln" graph).["Weights"].["Bias"] <- JsonValue.Create((fieldsOf "ln" graph).["Weights"].["Gain"].GetValue<string>())
            refusedBytes "checksum" (stale point bytes)
            refusedBytes "already uses" (resigned point bytes)

        // Strict reading.
        testCase "a dtype other than F64 is reported as such, not as a checksum mismatch" <| fun () ->
            let bytes = bytesOf (sample ())
            let f32 (header: JsonObject) (_: JsonObject) = header.[(tensorNames header).Head].["dtype"] <- JsonValue.Create "F32"
            for file in [ stale f32 bytes; resigned f32 bytes ] do
                match load file with
                | Error(:? GraphFileException as e) ->
                    Expect.stringContains e.Message "dtype F32" "names the dtype"
                    Expect.isFalse (e.Message.Contains "checksum") "not a checksum mismatch"
                | other -> failtestf "expected a GraphFileException, got %A" other

        testCase "offsets out of range, a shape that does not fit its bytes, a gap and trailing bytes are refused" <| fun () ->
            let bytes = bytesOf (sample ())
            let lastOffsets (change: int64 -> int64 -> int64 * int64) (header: JsonObject) (_: JsonObject) =
                let last = List.last (tensorNames header)
                let o = header.[last].["data_offsets"].AsArray()
                let b, e = change (o.[0].GetValue<int64>()) (o.[1].GetValue<int64>())
                header.[last].["data_offsets"] <- JsonArray(JsonValue.Create b, JsonValue.Create e)
            let resize (extra: int64) (header: JsonObject) (graph: JsonObject) =
                let last = List.last (tensorNames header)
                let o = header.[last].["data_offsets"].AsArray()
                let b, e = o.[0].GetValue<int64>(), o.[1].GetValue<int64>()
                header.[last].["shape"] <- JsonArray(JsonValue.Create((e - b) / 8L + extra))
                lastOffsets (fun b e -> b, e + 8L * extra) header graph
            refusedBytes "truncated" (resigned (resize 100L) bytes)
            refusedBytes "after its tensors" (resigned (resize -1L) bytes)
            refusedBytes "ends before it begins" (resigned (lastOffsets (fun b e -> e, b)) bytes)
            refusedBytes "leaving a gap" (resigned (lastOffsets (fun b e -> b + 8L, e + 8L)) bytes)
            refusedBytes "not two non-negative integers" (resigned (lastOffsets (fun b e -> -b - 8L, e)) bytes)
            let reshape (header: JsonObject) (_: JsonObject) = header.[(tensorNames header).Head].["shape"] <- JsonArray(JsonValue.Create 7, JsonValue.Create 3)
            refusedBytes "needs" (resigned reshape bytes)
            let hugeShape (header: JsonObject) (_: JsonObject) =
                header.[(tensorNames header).Head].["shape"] <- JsonArray(JsonValue.Create Int32.MaxValue, JsonValue.Create Int32.MaxValue, JsonValue.Create Int32.MaxValue)
            refusedBytes "too many" (resigned hugeShape bytes)
            refusedBytes "after its tensors" (Array.append bytes [| 0uy |])

        testCase "an endless or huge input fails fast, before allocating" <| fun () ->
            let watch = Diagnostics.Stopwatch.StartNew()
            if File.Exists "/dev/zero" then
                try
                    GraphFile.Load "/dev/zero" |> ignore
                    failtest "/dev/zero was loaded"
                with :? GraphFileException as e -> Expect.stringContains e.Message "header length" "the reason"
            for declared in [ UInt64.MaxValue; 1UL <<< 62; uint64 Int32.MaxValue + 1UL; 100_000_001UL ] do
                refusedBytes "header length" (Array.append (BitConverter.GetBytes declared) "{}"B)
            refusedBytes "claims" (Array.append (BitConverter.GetBytes 99_999_999UL) "{}"B)
            Expect.isLessThan watch.Elapsed.TotalSeconds 2.0 "fails fast"

        testCase "malformed metadata is refused as a GraphFileException" <| fun () ->
            let bytes = bytesOf (sample ())
            refusedBytes "unknown key \"note\"" (resigned (metadataEdit "note" "hello") bytes)
            refusedBytes "not a string" (resigned (fun h _ -> h.["__metadata__"].["version"] <- JsonValue.Create 2) bytes)
            refusedBytes "not \"duality-graph\"" (resigned (metadataEdit "format" "other") bytes)
            refusedBytes "unknown key 'Extra'" (resigned (fun _ g -> g.["Extra"] <- JsonValue.Create 1) bytes)
            refusedBytes "is missing" (resigned (fun _ g -> (fieldsOf "s" g).Remove "Start" |> ignore) bytes)
            refusedBytes "not an integer" (resigned (fun _ g -> (fieldsOf "s" g).["Start"] <- num 1.5) bytes)
            refusedBytes "not one of" (resigned (fun _ g -> (fieldsOf "act" g).["Kind"] <- JsonValue.Create "4") bytes)
            refusedBytes "not one of" (resigned (fun _ g -> (fieldsOf "act" g).["Kind"] <- JsonValue.Create 4) bytes)
            refusedBytes "not one of" (resigned (fun _ g -> (fieldsOf "act" g).["Kind"] <- JsonValue.Create "relu") bytes)
            refusedBytes "not one of" (resigned (fun _ g -> (fieldsOf "act" g).["Kind"] <- JsonValue.Create "ReLU, Tanh") bytes)
            refusedBytes "not an earlier node" (resigned (fun _ g -> (fieldsOf "p" g).["Source"] <- JsonValue.Create "f") bytes)
            refusedBytes "is not a field of Scale" (resigned (fun _ g -> (fieldsOf "f" g).["Bias"] <- JsonValue.Create 1) bytes)
            refusedBytes "is not 64 hex digits" (stale (metadataEdit "sha256" "abc") bytes)

        testCase "a graph whose weights do not fit its nodes is refused, naming the node" <| fun () ->
            refusedBytes "'p'" (resigned (fun _ g -> (fieldsOf "p" g).["OutFeatures"] <- JsonValue.Create 5) (bytesOf (sample ())))

        testCase "an unknown node kind is refused, naming the node" <| fun () ->
            let mystery (_: JsonObject) (graph: JsonObject) =
                graph.["nodes"].AsArray() |> Seq.find (fun n -> string n.["kind"] = "RmsNorm") |> fun n -> n.["kind"] <- JsonValue.Create "Mystery"
            refusedBytes "Mystery" (resigned mystery (bytesOf (sample ())))

        // Versions.
        testCase "a file version that is not a positive integer is refused as malformed" <| fun () ->
            let bytes = bytesOf (sample ())
            for version in [ "abc"; "1.0"; "0"; "-1"; ""; "+2"; "02"; " 2" ] do
                refusedBytes "is not a positive integer" (stale (metadataEdit "version" version) bytes)

        testCase "a newer file version asks to upgrade" <| fun () ->
            let bytes = bytesOf (sample ())
            refusedBytes "written by a newer version of Duality (file version 3, this library reads up to 2): upgrade" (stale (metadataEdit "version" "3") bytes)
            refusedBytes "written by a newer version of Duality (file version 99999999999999999999, this library reads up to 2): upgrade"
                (stale (metadataEdit "version" "99999999999999999999") bytes)

        testCase "a version 1 file still loads, and saves as version 2" <| fun () ->
            let fixture = Duality.Properties.Support.fixturePath "graph-v1.safetensors"
            let g = GraphFile.Load fixture
            Expect.equal
                [ for n in g.Nodes -> $"{n.Name}|{n.Describe()}" ]
                [ "x|Input 3"; "context|Input 2"; "concat|Concat of 2"; "proj|Projection 5 -> 4"
                  "gate/gate/projection|Projection 4 -> 4 (no bias)"; "gate|Gate (value * SiLU(gate))"
                  "recurrence|LinearRecurrence 4 (complex, trainable lambda)"; "recurrence_2/decay/projection|Projection 8 -> 1"
                  "recurrence_2|LinearRecurrence 8 (real, input-dependent decay)"
                  "attention|Attention 8 (causal linear, 2 x (k 2, v 3), input-dependent decay, out 5)"
                  "attention_2|Attention 5 (causal linear, 1 x (k 2, v 2), phi = EluPlusOne, decay 0.9, phase 0.3)"
                  "gelu|Activation GELU"; "residual/rmsnorm|RmsNorm 2"; "residual/projection|Projection 2 -> 2"; "residual|Add"
                  "slice|Slice [1, 2)"; "recurrence_3|LinearRecurrence 1 (real, fixed lambda)"; "layernorm|LayerNorm 1"; "scale|Scale 0.5" ]
                "the nodes of the version 1 file"
            Expect.isTrue g.HasAllWeights "every weight"
            let resaved = bytesOf g
            let header, data = split resaved
            Expect.equal (string header.["__metadata__"].["version"]) "2" "saved as version 2"
            let _, v1Data = split (File.ReadAllBytes fixture)
            let values (d: byte[]) = Array.init (d.Length / 8) (fun i -> BitConverter.ToDouble(d, 8 * i)) |> Array.sort
            Expect.equal (values data) (values v1Data) "the same weights"
            match load resaved with
            | Ok again -> Expect.equal again g "the version 2 file loads the same graph"
            | Error e -> raise e
            let damaged = File.ReadAllBytes fixture
            damaged.[damaged.Length - 1] <- damaged.[damaged.Length - 1] ^^^ 1uy
            refusedBytes "checksum" damaged

        // Saving.
        testCase "saving through a symbolic link writes the link's target and leaves the link a link" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            try
                let real = Path.Combine(directory, "real.safetensors")
                let g = sample ()
                GraphFile.Save(InitializeWeights.Run(Duality.Builders.Model.Input("x", 2).Projection(3).Build(), 1), real)
                let link = Path.Combine(directory, "link.safetensors")
                File.CreateSymbolicLink(link, "real.safetensors") |> ignore
                let chained = Path.Combine(directory, "chained.safetensors")
                File.CreateSymbolicLink(chained, link) |> ignore
                GraphFile.Save(g, chained)
                Expect.isNotNull (FileInfo(link).LinkTarget) "the link is still a link"
                Expect.isNotNull (FileInfo(chained).LinkTarget) "the chained link is still a link"
                Expect.equal (GraphFile.Load real) g "the target holds the graph"
                Expect.equal (GraphFile.Load chained) g "read through the link"
                Expect.equal (Directory.GetFiles directory |> Array.length) 3 "no temporary files"
                let dangling = Path.Combine(directory, "dangling.safetensors")
                File.CreateSymbolicLink(dangling, Path.Combine(directory, "new.safetensors")) |> ignore
                GraphFile.Save(g, dangling)
                Expect.isNotNull (FileInfo(dangling).LinkTarget) "a dangling link stays a link"
                Expect.equal (GraphFile.Load(Path.Combine(directory, "new.safetensors"))) g "its target is created"
            finally
                Directory.Delete(directory, true)

        testCase "saving where a file cannot be written raises GraphFileException naming the path" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let cannotWrite (contains: string) (path: string) =
                try
                    GraphFile.Save(sample (), path)
                    failtestf "saved to %s" path
                with :? GraphFileException as e ->
                    Expect.stringContains e.Message "cannot write" "says it cannot write"
                    Expect.stringContains e.Message path "names the path"
                    Expect.stringContains e.Message contains "the reason"
                    Expect.stringContains e.Message "hint:" "gives a hint"
            try
                cannotWrite "does not exist" (Path.Combine(directory, "missing", "model.safetensors"))
                let file = Path.Combine(directory, "file")
                File.WriteAllText(file, "")
                cannotWrite "is a file, not a folder" (Path.Combine(file, "model.safetensors"))
                cannotWrite "is a folder" directory
                // permissions do not stop root, so the read-only case runs only for other users
                if not Environment.IsPrivilegedProcess then
                    let readOnly = Path.Combine(directory, "read-only")
                    Directory.CreateDirectory readOnly |> ignore
                    let path = Path.Combine(readOnly, "model.safetensors")
                    GraphFile.Save(sample (), path)
                    File.SetUnixFileMode(readOnly, UnixFileMode.UserRead ||| UnixFileMode.UserExecute)
                    try
                        cannotWrite "permission denied" path
                        Expect.equal (GraphFile.Load path) (sample ()) "the previous file is unchanged"
                    finally
                        File.SetUnixFileMode(readOnly, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute)
            finally
                Directory.Delete(directory, true)

        testCase "a field type graph files cannot hold is a bug naming the record and the field" <| fun () ->
            let shape = typeof<GraphFile>.Assembly.GetType("Duality.Persistence.RecordShape").GetMethod("OfNode")
            try
                shape.Invoke(null, [| typeof<UnsupportedRecord> |]) |> ignore
                failtest "an unsupported field was accepted"
            with :? Reflection.TargetInvocationException as e ->
                Expect.isTrue (e.InnerException :? InvalidOperationException) "a bug, not a file error"
                Expect.stringContains e.InnerException.Message "bug in graph files" "says it is a bug"
                Expect.stringContains e.InnerException.Message "'Ratio' of UnsupportedRecord" "names the record and the field"
    ]
