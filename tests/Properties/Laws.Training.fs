/// Laws of training and analysis: fast, seeded properties (the long runs are examples).
module Duality.Properties.LawsTraining

open System
open System.IO
open Expecto
open TorchSharp
open Duality
open Duality.Ir
open Duality.Passes
open Duality.Training

let private options steps = TrainingOptions(Steps = steps, BatchSize = 32, LearningRate = 1e-2, Progress = null, RecordEvery = 1, Seed = 5)

/// A copy of the options with some changed (C# records have no `with` in F#).
type TrainingOptions with
    member o.With(?Steps, ?BatchSize, ?LearningRate, ?Optimizer, ?WeightDecay, ?Schedule, ?MaxGradientNorm: float, ?RecordEvery, ?Seed,
                  ?LossCsv: string) =
        TrainingOptions(
            Steps = defaultArg Steps o.Steps, BatchSize = defaultArg BatchSize o.BatchSize, LearningRate = defaultArg LearningRate o.LearningRate,
            Optimizer = defaultArg Optimizer o.Optimizer, WeightDecay = defaultArg WeightDecay o.WeightDecay, Schedule = defaultArg Schedule o.Schedule,
            MaxGradientNorm = (match MaxGradientNorm with Some n -> Nullable n | None -> o.MaxGradientNorm),
            RecordEvery = defaultArg RecordEvery o.RecordEvery, Seed = defaultArg Seed o.Seed,
            LossCsv = defaultArg LossCsv o.LossCsv, Progress = o.Progress)

/// A task that counts its batches and losses, and whose loss is NaN from the call numbered nanFrom on.
type private Watched(inner: ITrainingTask, ?nanFrom: int) =
    member val Batches = 0 with get, set
    member val Losses = 0 with get, set
    interface ITrainingTask with
        member this.Batch(size, random) =
            this.Batches <- this.Batches + 1
            inner.Batch(size, random)
        member this.Loss(output, target) =
            this.Losses <- this.Losses + 1
            let loss = inner.Loss(output, target)
            match nanFrom with
            | Some k when this.Losses >= k -> loss + torch.tensor (Double.NaN, dtype = loss.dtype)
            | _ -> loss
        member _.ExpectedOutputShape(input, target) = inner.ExpectedOutputShape(input, target)
    override _.ToString() = string inner

/// Every file under a folder with its contents, to show that nothing was written.
let private snapshot directory =
    let files = Directory.GetFiles(directory, "*", SearchOption.AllDirectories) |> Array.sort
    let folders = Directory.GetDirectories(directory, "*", SearchOption.AllDirectories) |> Array.sort
    (files |> Array.map (fun f -> f, File.ReadAllBytes f |> Array.toList) |> List.ofArray), List.ofArray folders

let private parameterValues (model: torch.nn.Module) =
    model.parameters() |> Seq.map (fun p -> p.detach().to_type(torch.ScalarType.Float64).data<double>().ToArray()) |> List.ofSeq

let private divergence f =
    let error = Expect.throwsC (fun () -> f () |> ignore) id
    match error with
    | :? TrainingDivergedException as e -> e
    | e -> failwithf "expected a TrainingDivergedException, got %s: %s" (e.GetType().Name) e.Message

let private pngSignature = [| 137uy; 80uy; 78uy; 71uy; 13uy; 10uy; 26uy; 10uy |]

let tests =
    testList "training" [
        testCase "training reduces the loss of a gated RNN student, reproducibly for a fixed seed" <| fun () ->
            let task = TeacherStudentTask(2, time = 6, seed = 3, dtype = torch.ScalarType.Float64)
            let run () =
                let student = Students.GatedRnn(2, 8, 8, 2, seed = 1).Compile(CompileOptions(DType = torch.ScalarType.Float64))
                Trainer.Train(student, task, options 150), student.ToGraph()
            let (first, trained), (again, _) = run (), run ()
            let losses (r: TrainingResult) = r.Losses |> Seq.map (fun struct (_, l) -> l) |> Array.ofSeq
            Expect.sequenceEqual (losses first) (losses again) "same seed, same losses"
            let initial = (losses first).[0]
            Expect.isLessThan first.FinalLoss (initial / 3.0) "the loss falls"
            Expect.isLessThan (Analysis.Loss(trained, task)) (initial / 3.0) "the trained graph keeps the trained function"

        testCase "the loss is written to CSV, and the result's losses are drawn to PNG by Duality.Plots" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let csv, png = Path.Combine(directory, "loss.csv"), Path.Combine(directory, "loss.png")
            let task = InContextRegressionTask(2, 1, 5, torch.ScalarType.Float64)
            let student = Students.GatedRnn(3, 4, 6, 1).Compile(CompileOptions(DType = torch.ScalarType.Float64))
            let result = Trainer.Train(student, task, TrainingOptions(Steps = 20, Progress = null, LossCsv = csv))
            Expect.equal (File.ReadAllLines csv).[0] "step,loss" "CSV header"
            Expect.isGreaterThan (File.ReadAllLines csv).Length 2 "CSV rows"
            Duality.Plots.Plots.Losses(png, [ Duality.Plots.Series.Losses("run", result) ])
            Expect.sequenceEqual (File.ReadAllBytes png |> Array.take 8) pngSignature "PNG signature"
            Directory.Delete(directory, true)

        testCase "training reports progress once per step, in increasing steps ending at Steps, with the step's loss" <| fun () ->
            let reports = Collections.Generic.List<TrainingProgress>()
            // a synchronous IProgress: Progress<T> would post to the thread pool, and the order would be the scheduler's
            let progress = { new IProgress<TrainingProgress> with member _.Report p = reports.Add p }
            let task = TeacherStudentTask(2, time = 3)
            let result = Trainer.Train(Students.GatedRnn(2, 3, 3, 2).Compile(), task, TrainingOptions(Steps = 7, BatchSize = 4, RecordEvery = 1, Progress = progress))
            Expect.equal [ for p in reports -> p.Step ] [ 1 .. 7 ] "steps 1 to Steps, once each"
            Expect.isTrue (reports |> Seq.forall (fun p -> p.Steps = 7)) "Steps in every report"
            Expect.equal [ for p in reports -> p.Loss ] [ for struct (_, l) in result.Losses -> l ] "each report carries its step's loss"
            Expect.isTrue (reports |> Seq.pairwise |> Seq.forall (fun (a, b) -> a.Elapsed <= b.Elapsed)) "elapsed time does not go back"
            Expect.isNull (TrainingOptions().Progress) "silent by default"

        testCase "baselines (linear attention, LSTM, GRU) train on the same tasks" <| fun () ->
            let task = TeacherStudentTask(2, time = 5, seed = 1)
            for model in [ Students.LinearAttention(2, 2).Compile() :> torch.nn.Module<torch.Tensor, torch.Tensor>; Students.Lstm(2, 8, 2); Students.Gru(2, 8, 2) ] do
                let result = Trainer.Train(model, task, options 30)
                Expect.isTrue (Double.IsFinite result.FinalLoss) "a finite loss"

        testCase "every invalid training option raises an ArgumentException naming the option, before any batch or file" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let aFile = Path.Combine(directory, "a-file")
            File.WriteAllText(aFile, "kept")
            let csv = Path.Combine(directory, "out", "loss.csv")
            let valid = TrainingOptions(Steps = 3, BatchSize = 4, Progress = null, LossCsv = csv)
            let unwritable = "/proc/duality-cannot-write/loss.csv"
            let cases: (string * TrainingOptions * string) list =
                [ "Steps 0", valid.With(Steps = 0), "Steps"
                  "Steps -5", valid.With(Steps = -5), "Steps"
                  "BatchSize 0", valid.With(BatchSize = 0), "BatchSize"
                  "BatchSize -1", valid.With(BatchSize = -1), "BatchSize"
                  "LearningRate -1e-3", valid.With(LearningRate = -1e-3), "LearningRate"
                  "LearningRate 0", valid.With(LearningRate = 0.0), "LearningRate"
                  "LearningRate NaN", valid.With(LearningRate = nan), "LearningRate"
                  "LearningRate +inf", valid.With(LearningRate = infinity), "LearningRate"
                  "LearningRate -inf", valid.With(LearningRate = -infinity), "LearningRate"
                  "Optimizer 7", valid.With(Optimizer = enum<OptimizerKind> 7), "Optimizer"
                  "WeightDecay -1e-2", valid.With(WeightDecay = -1e-2), "WeightDecay"
                  "WeightDecay NaN", valid.With(WeightDecay = nan), "WeightDecay"
                  "WeightDecay +inf", valid.With(WeightDecay = infinity), "WeightDecay"
                  "Schedule -1", valid.With(Schedule = enum<Schedule> -1), "Schedule"
                  "MaxGradientNorm 0", valid.With(MaxGradientNorm = 0.0), "MaxGradientNorm"
                  "MaxGradientNorm -1", valid.With(MaxGradientNorm = -1.0), "MaxGradientNorm"
                  "MaxGradientNorm NaN", valid.With(MaxGradientNorm = nan), "MaxGradientNorm"
                  "RecordEvery 0", valid.With(RecordEvery = 0), "RecordEvery"
                  "RecordEvery -1", valid.With(RecordEvery = -1), "RecordEvery"
                  "LossCsv empty", valid.With(LossCsv = ""), "LossCsv"
                  "LossCsv blank", valid.With(LossCsv = "  "), "LossCsv"
                  "LossCsv a directory", valid.With(LossCsv = directory), "LossCsv"
                  "LossCsv ending in a separator", valid.With(LossCsv = Path.Combine(directory, "new") + string Path.DirectorySeparatorChar), "LossCsv"
                  "LossCsv under a file", valid.With(LossCsv = Path.Combine(aFile, "loss.csv")), "LossCsv"
                  "Steps 0 and BatchSize 0: the first is named", valid.With(Steps = 0, BatchSize = 0), "Steps" ]
                @ (if OperatingSystem.IsLinux() then
                       [ "LossCsv unwritable", valid.With(LossCsv = unwritable), "LossCsv" ]
                   else [])
            let before = snapshot directory
            let teacher, student = TeacherStudentTask(2, time = 3), Students.GatedRnn(2, 3, 3, 2).Compile()
            for name, options, option in cases do
                let task = Watched(teacher)
                let error = Expect.throwsC (fun () -> Trainer.Train(student, task, options) |> ignore) id
                Expect.isTrue (error :? ArgumentException) $"{name}: an ArgumentException, not {error.GetType().Name}: {error.Message}"
                let error = error :?> ArgumentException
                Expect.equal error.ParamName option $"{name}: ParamName"
                Expect.stringContains error.Message $"TrainingOptions.{option}" $"{name}: the message names the option"
                Expect.stringContains error.Message "Fix:" $"{name}: the message gives the fix"
                Expect.equal task.Batches 0 $"{name}: no batch was drawn"
                Expect.equal (snapshot directory) before $"{name}: no file was written"
            let both = Expect.throwsC (fun () -> Trainer.Train(student, teacher, valid.With(Steps = 0, BatchSize = 0)) |> ignore) id
            Expect.stringContains both.Message "TrainingOptions.BatchSize" "every invalid option is listed"
            Directory.Delete(directory, true)

        testCase "valid edge options train: one step, batch of one, AdamW with decay, constant schedule, clipping, a negative seed" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let task = TeacherStudentTask(2, time = 3)
            let train options = Trainer.Train(Students.GatedRnn(2, 3, 3, 2, seed = 2).Compile(), task, options)
            let steps (r: TrainingResult) = r.Losses |> Seq.map (fun struct (s, _) -> s) |> List.ofSeq
            let basic = TrainingOptions(Steps = 5, BatchSize = 4, Progress = null)
            for name, options, recorded in
                [ "Steps 1", basic.With(Steps = 1), [ 1 ]
                  "BatchSize 1, RecordEvery beyond Steps", basic.With(BatchSize = 1, RecordEvery = 100), [ 1; 5 ]
                  "AdamW, WeightDecay 0.1, constant", basic.With(Optimizer = OptimizerKind.AdamW, WeightDecay = 0.1, Schedule = Schedule.Constant, RecordEvery = 2), [ 1; 2; 4; 5 ]
                  "MaxGradientNorm 0.5, Seed -3", basic.With(MaxGradientNorm = 0.5, Seed = -3, RecordEvery = 5), [ 1; 5 ]
                  "files in a folder yet to be made", basic.With(LossCsv = Path.Combine(directory, "a", "b", "loss.csv")), [ 1; 5 ] ] do
                let result = train options
                Expect.equal (steps result) recorded $"{name}: recorded steps"
                Expect.isTrue (result.Losses |> Seq.forall (fun struct (_, l) -> Double.IsFinite l)) $"{name}: finite losses"
            Expect.equal (File.ReadAllLines(Path.Combine(directory, "a", "b", "loss.csv")).Length) 3 "header and two rows"
            let losses (r: TrainingResult) = r.Losses |> Seq.map (fun struct (_, l) -> l) |> List.ofSeq
            let plain = losses (train (basic.With(RecordEvery = 1)))
            Expect.equal (losses (train (basic.With(RecordEvery = 1, MaxGradientNorm = 1e30)))) plain "a norm no gradient reaches changes nothing"
            Expect.notEqual (losses (train (basic.With(RecordEvery = 1, MaxGradientNorm = 1e-4)))) plain "a small norm changes the updates"
            Directory.Delete(directory, true)

        testCase "a model with no trainable parameters is refused as 'model'" <| fun () ->
            let error = Expect.throwsC (fun () -> Trainer.Train(torch.nn.Identity(), TeacherStudentTask(2), TrainingOptions(Progress = null)) |> ignore) id
            Expect.equal (error :?> ArgumentException).ParamName "model" "ParamName"

        testCase "an output width other than the task's raises a GraphException at '(model output)' before the first step" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let csv = Path.Combine(directory, "loss.csv")
            let case name (model: torch.nn.Module<torch.Tensor, torch.Tensor>) (task: ITrainingTask) expected received = name, model, task, expected, received
            let teacher = TeacherStudentTask(2, time = 4) :> ITrainingTask
            let cases =
                [ case "gated RNN, width 3 for 2" (Students.GatedRnn(2, 4, 4, 3).Compile()) teacher 2 3
                  case "gated RNN, width 1 for 2" (Students.GatedRnn(2, 4, 4, 1).Compile()) teacher 2 1
                  case "LSTM, width 3 for 2" (Students.Lstm(2, 4, 3)) teacher 2 3
                  case "regression, width 4 for 1" (Students.GatedRnn(4, 4, 4, 4).Compile()) (InContextRegressionTask(3, 1, 5)) 1 4 ]
            for name, model, inner, expected, received in cases do
                let task = Watched(inner)
                let parameters = parameterValues model
                let error = Expect.throwsC (fun () -> Trainer.Train(model, task, TrainingOptions(Steps = 3, BatchSize = 4, Progress = null, LossCsv = csv)) |> ignore) id
                Expect.isTrue (error :? GraphException) $"{name}: a GraphException, not {error.GetType().Name}: {error.Message}"
                let d = (error :?> GraphException).Diagnostics |> Seq.exactlyOne
                Expect.equal d.NodePath "(model output)" $"{name}: where"
                Expect.stringContains d.NodeDescription (inner.GetType().Name) $"{name}: the task is named"
                Expect.equal (d.Expected, d.Received) ("shape " + Diagnostic.Sequence expected, Diagnostic.Sequence received) $"{name}: the widths"
                Expect.equal d.Hint $"give the student an output width of {expected}" $"{name}: the fix"
                Expect.equal (task.Batches, task.Losses) (1, 0) $"{name}: one batch through the model, no loss, no step"
                Expect.equal (parameterValues model) parameters $"{name}: the parameters are untouched"
                Expect.isFalse (File.Exists csv) $"{name}: no CSV"
            Directory.Delete(directory, true)

        testCase "task losses refuse an output they do not score: no broadcasting, no column picked" <| fun () ->
            let teacher = TeacherStudentTask(2, time = 4)
            let struct (_, target) = teacher.Batch(3, new torch.Generator(1UL))
            let regression = InContextRegressionTask(3, 1, 5)
            let struct (_, answer) = regression.Batch(3, new torch.Generator(1UL))
            let refused name (f: unit -> torch.Tensor) hint =
                let error = Expect.throwsC (fun () -> f () |> ignore) id
                Expect.isTrue (error :? GraphException) $"{name}: a GraphException, not {error.GetType().Name}: {error.Message}"
                Expect.equal ((error :?> GraphException).Diagnostics |> Seq.exactlyOne).Hint hint $"{name}: the hint"
            refused "teacher, width 1 (would broadcast)" (fun () -> teacher.Loss(torch.zeros(3L, 4L, 1L), target)) "give the student an output width of 2"
            refused "teacher, time 5" (fun () -> teacher.Loss(torch.zeros(3L, 5L, 2L), target)) "return one output per time step: 4 steps"
            refused "teacher, no time axis" (fun () -> teacher.Loss(torch.zeros(3L, 2L), target)) "the model must return a sequence [batch, time, width]: [3, 4, 2]"
            refused "regression, width 4 (column 0 was used)" (fun () -> regression.Loss(torch.zeros(3L, 6L, 4L), answer)) "give the student an output width of 1"
            refused "regression, only the query" (fun () -> regression.Loss(torch.zeros(3L, 1L, 1L), answer)) "return one output per time step: 6 steps"
            refused "Analysis.Loss of a wider graph" (fun () -> torch.tensor (Analysis.Loss(Students.GatedRnn(4, 3, 3, 2), regression, batch = 8), dtype = torch.ScalarType.Float64)) "give the student an output width of 1"
            Expect.isTrue (Double.IsFinite(regression.Loss(torch.zeros(3L, 6L, 1L), answer).item<float32>() |> float)) "the right shape is scored"

        testCase "a learning rate of 1e6 raises TrainingDivergedException at the first non-finite loss, with the last finite one, and flushes the CSV" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let csv = Path.Combine(directory, "loss.csv")
            let task = TeacherStudentTask(2, time = 4, seed = 3)
            let run options = divergence (fun () -> Trainer.Train(Students.GatedRnn(2, 4, 4, 2, seed = 1).Compile(), task, options))
            let every = run (TrainingOptions(Steps = 50, BatchSize = 8, LearningRate = 1e6, Progress = null, RecordEvery = 1))
            let recorded = every.Losses |> List.ofSeq
            Expect.equal (recorded |> List.map (fun struct (s, _) -> s)) [ 1 .. every.Step ] "every step until the diverged one"
            Expect.isTrue (recorded |> List.take (every.Step - 1) |> List.forall (fun struct (_, l) -> Double.IsFinite l)) "finite before"
            Expect.isFalse (Double.IsFinite every.Loss) "not finite at the step"
            Expect.isGreaterThan every.Step 1 "at least one finite step"
            Expect.equal every.LastFiniteStep (Nullable(every.Step - 1)) "the last finite step"
            let struct (_, previous) = recorded.[every.Step - 2]
            Expect.equal every.LastFiniteLoss (Nullable previous) "the last finite loss"
            Expect.stringContains every.Hint "lower LearningRate" "the hint"
            let sparse = run (TrainingOptions(Steps = 50, BatchSize = 8, LearningRate = 1e6, Progress = null, RecordEvery = 100, LossCsv = csv))
            Expect.equal (sparse.Step, sparse.LastFiniteStep, sparse.LastFiniteLoss) (every.Step, every.LastFiniteStep, every.LastFiniteLoss) "recorded or not, the last finite loss is known"
            let lines = File.ReadAllLines csv
            Expect.equal lines.[0] "step,loss" "CSV header"
            Expect.equal lines.Length 3 "step 1 and the diverged step"
            Expect.stringStarts lines.[2] $"{every.Step}," "the CSV ends at the diverged step"
            Directory.Delete(directory, true)

        testCase "a task whose loss turns NaN at step 4 raises TrainingDivergedException at step 4 with step 3's loss, without updating on it" <| fun () ->
            let train nanFrom =
                let task = Watched(TeacherStudentTask(2, time = 3), nanFrom)
                let student = Students.GatedRnn(2, 3, 3, 2).Compile()
                let error = divergence (fun () -> Trainer.Train(student, task, TrainingOptions(Steps = 10, BatchSize = 4, Progress = null, RecordEvery = 2)))
                error, task, student
            let error, task, student = train 4
            Expect.equal (error.Step, error.LastFiniteStep) (4, Nullable 3) "the steps"
            Expect.isTrue (error.LastFiniteLoss.HasValue && Double.IsFinite error.LastFiniteLoss.Value) "a finite last loss"
            Expect.equal task.Losses 4 "no step after the diverged one"
            Expect.isTrue (parameterValues student |> List.forall (Array.forall Double.IsFinite)) "the NaN loss updated nothing"
            Expect.equal (error.Losses |> Seq.map (fun struct (s, _) -> s) |> List.ofSeq) [ 1; 2; 4 ] "the recorded steps, then the diverged one"
            let first, _, _ = train 1
            Expect.equal (first.Step, first.LastFiniteStep, first.LastFiniteLoss) (1, Nullable(), Nullable()) "no finite step at all"
            Expect.stringContains first.Hint "before any update" "the hint for a loss that starts non-finite"

        testCase "the analysis reads a lowered attention as d(d+1)/2 quadratic forms on lambda = 1 neurons, also under the invariances" <| fun () ->
            for d in [ 2; 3; 4 ] do
                let g = InitializeWeights.Run(Duality.Builders.Model.Input("x", d).Attention(1, d, d, name = "attention").Build(), d)
                let lowered = LowerAttention.ToGatedRnn(g, Construction.Full)
                for graph in [ lowered; LawsRaising.perturbed d lowered ] do
                    let reading = Analysis.Read graph
                    Expect.equal (reading.NearOne, reading.NearZero, reading.Elsewhere) (d * d, d, 0) "memory and query neurons"
                    Expect.equal reading.QuadraticFormRank (d * (d + 1) / 2) "the symmetric forms of the teacher"
                    Expect.isTrue (obj.ReferenceEquals(Analysis.Prune graph, graph)) "nothing to prune"
                    Expect.equal (reading.Histogram(10)) [| d; 0; 0; 0; 0; 0; 0; 0; 0; d * d |] "the histogram: queries at 0, memory at 1"

        testCase "the fitted order-3 tensor of a lowered attention equals the attention's, also under the invariances" <| fun () ->
            let task = TeacherStudentTask(3, seed = 2, dtype = torch.ScalarType.Float64)
            let teacher = Analysis.CubicTensor(task.Teacher)
            let lowered = LowerAttention.ToGatedRnn(task.Teacher, Construction.Full)
            for graph in [ lowered; LawsRaising.perturbed 4 lowered; LowerAttention.ToGatedRnn(task.Teacher, Construction.Compressed) ] do
                Expect.isLessThan (Analysis.TensorDistance(Analysis.CubicTensor(graph), teacher)) 1e-9 "same tensor"
            let other = TeacherStudentTask(3, seed = 3, dtype = torch.ScalarType.Float64)
            Expect.isGreaterThan (Analysis.TensorDistance(Analysis.CubicTensor(other.Teacher), teacher)) 0.1 "another teacher is far"

        testCase "an attention rebuilt from the fitted tensor of a network computes that network's function" <| fun () ->
            let task = TeacherStudentTask(3, seed = 4, dtype = torch.ScalarType.Float64)
            let lowered = LawsRaising.perturbed 5 (LowerAttention.ToGatedRnn(task.Teacher, Construction.Full))
            let recovered = Analysis.AttentionFromTensor(Analysis.CubicTensor(lowered), 3)
            let report = Duality.Verification.Equivalence.Check(lowered, recovered, Duality.Verification.EquivalenceOptions(Tolerance = 1e-8))
            Expect.isTrue report.Equivalent (string report)

        testCase "the regression tensor of an attention implementing one step of gradient descent is that of the predictor" <| fun () ->
            let task = InContextRegressionTask(3, 1, 10, torch.ScalarType.Float64)
            let struct (_, eta) = task.OneStepGradientDescent()
            let m (rows: float list list) = DoubleTensor.Matrix(array2D rows)
            let select = [ [ 1.; 0.; 0.; 0. ]; [ 0.; 1.; 0.; 0. ]; [ 0.; 0.; 1.; 0. ] ]
            let weights = AttentionWeights(m (select |> List.map (List.map ((*) eta))), m select, m [ [ 0.; 0.; 0.; 1. ] ], null)
            let gd = Duality.Builders.Model.Input("x", 4).Attention(1, 3, 1, weights = weights).Build()
            let struct (fitted, reference) = Analysis.RegressionTensors(gd, task)
            Expect.isLessThan (Analysis.TensorDistance(fitted, reference)) 1e-8 "the same tensor"
            Expect.floatClose { absolute = 0.01; relative = 0.0 } (Analysis.Loss(gd, task, 20000)) (task.OneStepGradientDescentLoss()) "its loss"

        testCase "the one-step gradient descent loss of in-context regression matches paper.md (0.2179 for d_x = 3, d_y = 1, n = 10)" <| fun () ->
            let loss = InContextRegressionTask(3, 1, 10, torch.ScalarType.Float64).OneStepGradientDescentLoss(200_000, 1)
            Expect.floatClose { absolute = 0.004; relative = 0.0 } loss 0.2179 "Monte Carlo estimate within 0.004"
    ]
