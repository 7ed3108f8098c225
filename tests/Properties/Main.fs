module Duality.Properties.Main

open Expecto
open Expecto.Impl

let tests =
    testList "Duality" [ LawsBuilders.tests; LawsErrors.tests; LawsCompiler.tests; LawsCompiler.coverage; LawsCompiler.kinds; LawsLowering.tests; LawsRaising.tests; LawsRaising.invariances; LawsFSharp.tests; LawsKernels.tests; LawsPersistence.tests; LawsTraining.tests; LawsPlots.tests; LawsStreaming.tests; LawsTiledAttention.tests; LawsCausality.tests; LawsBranches.tests; LawsReliability.tests; LawsArchitecture.tests; LawsBlocks.tests; LawsPackaging.tests; LawsPyTorch.tests; LawsRotary.tests; LawsGatedLowering.tests ]

/// Runs every law with Expecto's console runner; the last line is the one CI counts: "N passed, N failed".
[<EntryPoint>]
let main argv =
    let mutable counts = (0, 0)
    let mutable failures = []
    let standard = defaultConfig.printer
    let printer =
        { standard with
            summary = fun config summary ->
                counts <- (summary.passed.Length, summary.failed.Length + summary.errored.Length)
                failures <-
                    [ for test, result in summary.failed @ summary.errored ->
                          let message =
                              match result.result with
                              | TestResult.Failed message -> message
                              | TestResult.Error error -> string error
                              | other -> string other
                          String.concat "." test.name, message ]
                standard.summary config summary }
    let exitCode = runTestsWithCLIArgs [ CLIArguments.Printer printer; CLIArguments.No_Spinner ] argv tests
    let passed, failed = counts
    // Expecto leaves a colour reset without a newline; the count goes on a line of its own.
    // Expecto's console writer pads lines, so the count is written to the raw stream.
    use raw = new System.IO.StreamWriter(System.Console.OpenStandardOutput())
    // each failure's message again just above it, where a log cut to its last lines still shows what failed and why
    for name, message in failures do
        let message = message.Trim()
        raw.Write(sprintf "\nfailed: %s\n  %s\n" name (if message.Length > 3000 then message.Substring(0, 3000) + " ..." else message))
    raw.Write(sprintf "\n%d passed, %d failed\n" passed failed)
    exitCode
