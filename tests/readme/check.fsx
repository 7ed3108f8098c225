// Compiles every ```csharp block of README.md (and of the packages' README, build/PackageReadme.md) and type-checks every ```fsharp block against the built
// libraries, so the README cannot drift from the API. Run after `dotnet build Dsl.sln -c Release`:
//
//   dotnet fsi tests/readme/check.fsx
//
// C# blocks are compiled together in one generated project (each block the body of its own method, its
// `using` lines at the top of its own file; errors point at README lines); F# blocks are type-checked
// with `dotnet fsi --typecheck-only` after `#load "examples/Duality.fsx"`. A block that relies on names
// an earlier block declared gets them from a hidden prelude: an HTML comment right above its fence,
// its first line saying why, the declarations on the lines after it (`using` lines go to the top),
//
//   <!-- readme-prelude: continues the first C# block
//   Graph graph = null!;
//   -->
//
// which GitHub does not render. A block whose fence is preceded by
// `<!-- readme-skip -->` is not checked.
open System
open System.Diagnostics
open System.IO

let root = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "../.."))
let documents = [ Path.Combine(root, "README.md"); Path.Combine(root, "build/PackageReadme.md") ]
let bin = Path.Combine(root, "src/Testing/bin/Release/net10.0")
let loader = Path.Combine(root, "examples/Duality.fsx")

type Block = { File: string; Language: string; Line: int; Prelude: string list; Code: string list }

/// The fenced csharp and fsharp blocks of a document, each with the line of its first code line and its prelude.
let blocksOf (document: string) =
    let lines = File.ReadAllLines document
    let rec scan i (comment: string list) (skip: bool) acc =
        if i >= lines.Length then List.rev acc
        else
            let line = lines.[i].Trim()
            if line.StartsWith "<!-- readme-skip" then scan (i + 1) [] true acc
            elif line.StartsWith "<!-- readme-prelude:" then
                let stop = Seq.findIndex (fun (l: string) -> l.Contains "-->") (Seq.skip i lines) + i
                let text = String.Join("\n", lines.[i..stop]).Trim()
                let body = text.Substring("<!-- readme-prelude:".Length, text.Length - "<!-- readme-prelude:".Length - "-->".Length)
                // the comment's first line says why; the declarations follow it
                scan (stop + 1) (body.Split('\n') |> List.ofArray |> List.tail) skip acc
            elif line = "```csharp" || line = "```fsharp" then
                let stop = Seq.findIndex (fun (l: string) -> l.Trim() = "```") (Seq.skip (i + 1) lines) + i + 1
                let block = { File = document; Language = line.Substring 3; Line = i + 2; Prelude = comment; Code = List.ofArray lines.[i + 1 .. stop - 1] }
                scan (stop + 1) [] false (if skip then acc else block :: acc)
            else scan (i + 1) (if line = "" then comment else []) (skip && line = "") acc
    scan 0 [] false []

let blocks = documents |> List.collect blocksOf

let run (file: string) (args: string) =
    let info = ProcessStartInfo(file, args, RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root)
    use p = Process.Start info
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out.Result + err

let work = Directory.CreateTempSubdirectory("readme-check-").FullName
let failures = ResizeArray<string>()

let csharp = blocks |> List.filter (fun b -> b.Language = "csharp")
if not csharp.IsEmpty then
    let project = Path.Combine(work, "csharp")
    Directory.CreateDirectory project |> ignore
    File.WriteAllText(Path.Combine(project, "Readme.csproj"), $"""<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
    <!-- a README block reads like a program: its results may go unused -->
    <NoWarn>CS0219;CS0168</NoWarn>
  </PropertyGroup>
  <ItemGroup>
    <Reference Include="{bin}/*.dll" Private="false" />
  </ItemGroup>
</Project>""")
    for k, b in List.indexed csharp do
        let isUsing (l: string) = l.TrimStart().StartsWith "using " && l.TrimEnd().EndsWith ";"
        let usings, body = b.Code |> List.partition isUsing
        let preludeUsings, prelude = b.Prelude |> List.partition isUsing
        let text =
            [ yield! usings
              yield! preludeUsings |> List.filter (fun u -> not (List.contains u usings))
              yield $"internal static class ReadmeBlock{k}"
              yield "{"
              yield "    internal static void Run()"
              yield "    {"
              yield! prelude
              yield $"#line {b.Line + usings.Length} \"{b.File}\""
              yield! body
              yield "#line default"
              yield "    }"
              yield "}" ]
        File.WriteAllLines(Path.Combine(project, $"Block{k}.cs"), text)
    let code, output = run "dotnet" $"build \"{project}\" -nologo -v:q -m:1"
    printfn "C#: %d blocks (lines %s): %s" csharp.Length (String.Join(", ", csharp |> List.map (fun b -> $"{Path.GetFileName b.File}:{b.Line}"))) (if code = 0 then "compiled" else "FAILED")
    if code <> 0 then failures.Add output

for b in blocks |> List.filter (fun b -> b.Language = "fsharp") do
    let script = Path.Combine(work, $"block{b.Line}.fsx")
    let text =
        [ yield $"#load \"{loader}\""
          yield! b.Prelude
          yield $"# {b.Line} \"{b.File}\""
          yield! b.Code ]
    File.WriteAllLines(script, text)
    let code, output = run "dotnet" $"fsi --typecheck-only \"{script}\""
    printfn "F#: block at %s line %d: %s" (Path.GetFileName b.File) b.Line (if code = 0 then "type-checked" else "FAILED")
    if code <> 0 then failures.Add output

Directory.Delete(work, true)
if failures.Count > 0 then
    for f in failures do eprintfn "%s" f
    exit 1
