/// Laws of graph files: saving and loading round-trips exactly; damaged files are refused with a reason.
module Duality.Properties.LawsPersistence

open System
open System.IO
open System.Text
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

let private saved () =
    let path = temporaryFile ()
    let g = InitializeWeights.Run(Duality.Builders.Model.Input("x", 3).Projection(4, name = "p").RmsNorm().Build(), 1)
    GraphFile.Save(g, path)
    let bytes = File.ReadAllBytes path
    File.Delete path
    bytes

/// Rewrites the graph description inside a saved file's header.
let private editGraph (edit: string -> string) (bytes: byte[]) =
    let length = int (BitConverter.ToUInt64(bytes, 0))
    let header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, length)).AsObject()
    let metadata = header.["__metadata__"].AsObject()
    metadata.["graph"] <- JsonValue.Create(edit (string metadata.["graph"]))
    let newHeader = Encoding.UTF8.GetBytes(header.ToJsonString())
    Array.concat [ BitConverter.GetBytes(uint64 newHeader.Length); newHeader; bytes.[8 + length ..] ]

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
            let bytes = saved ()
            refused "truncated" (fun path -> File.WriteAllBytes(path, bytes.[.. 5]))
            refused "checksum" (fun path -> File.WriteAllBytes(path, bytes.[.. bytes.Length - 9]))

        testCase "a damaged tensor byte is refused by the checksum" <| fun () ->
            let bytes = saved ()
            bytes.[bytes.Length - 3] <- bytes.[bytes.Length - 3] ^^^ 0x40uy
            refused "checksum" (fun path -> File.WriteAllBytes(path, bytes))

        testCase "a file that is not a graph file is refused" <| fun () ->
            refused "header" (fun path -> File.WriteAllBytes(path, Array.init 100 byte))
            refused "not valid JSON" (fun path -> File.WriteAllBytes(path, Array.append (BitConverter.GetBytes 4UL) "{oops"B))
            refused "does not exist" ignore

        testCase "a graph whose weights do not fit its nodes is refused, naming the node" <| fun () ->
            let bytes = saved () |> editGraph (fun g -> g.Replace("\"out\":4", "\"out\":5"))
            refused "'p'" (fun path -> File.WriteAllBytes(path, bytes))

        testCase "an unknown node kind is refused, naming the node" <| fun () ->
            let bytes = saved () |> editGraph (fun g -> g.Replace("\"kind\":\"RmsNorm\"", "\"kind\":\"Mystery\""))
            refused "Mystery" (fun path -> File.WriteAllBytes(path, bytes))

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
    ]
