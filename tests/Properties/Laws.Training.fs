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

        testCase "the loss is written to CSV and drawn to PNG" <| fun () ->
            let directory = Directory.CreateTempSubdirectory("duality-").FullName
            let csv, png = Path.Combine(directory, "loss.csv"), Path.Combine(directory, "loss.png")
            let task = InContextRegressionTask(2, 1, 5, torch.ScalarType.Float64)
            let student = Students.GatedRnn(3, 4, 6, 3).Compile(CompileOptions(DType = torch.ScalarType.Float64))
            Trainer.Train(student, task, TrainingOptions(Steps = 20, Progress = null, LossCsv = csv, LossPlot = png)) |> ignore
            Expect.equal (File.ReadAllLines csv).[0] "step,loss" "CSV header"
            Expect.isGreaterThan (File.ReadAllLines csv).Length 2 "CSV rows"
            Expect.sequenceEqual (File.ReadAllBytes png |> Array.take 8) [| 137uy; 80uy; 78uy; 71uy; 13uy; 10uy; 26uy; 10uy |] "PNG signature"
            Directory.Delete(directory, true)

        testCase "baselines (linear attention, LSTM, GRU) train on the same tasks" <| fun () ->
            let task = TeacherStudentTask(2, time = 5, seed = 1)
            for model in [ Students.LinearAttention(2, 2).Compile() :> torch.nn.Module<torch.Tensor, torch.Tensor>; Students.Lstm(2, 8, 2); Students.Gru(2, 8, 2) ] do
                let result = Trainer.Train(model, task, options 30)
                Expect.isTrue (Double.IsFinite result.FinalLoss) "a finite loss"

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
