// Students of the paper's gated RNN layer imitate a random linear attention teacher (d = 2, so the
// threshold is d(d+1)/2 + d = 5 recurrent neurons); read their eigenvalues and stored quadratic forms.
#load "Duality.fsx"

open Duality
open Duality.Training
open TorchSharp

let d = 2
let task = TeacherStudentTask(d, seed = 7, dtype = torch.ScalarType.Float64)
let options = TrainingOptions(Steps = 1500, LearningRate = 3e-3, Progress = null)

printfn "%3s %10s  %s" "N" "loss" "reading"
for neurons in [ 3; 5; 8 ] do
    let student = Students.GatedRnn(d, neurons, 2 * d * d, d, seed = 0).Compile(CompileOptions(DType = torch.ScalarType.Float64))
    let result = Trainer.Train(student, task, options)
    let reading = Analysis.Read(student.ToGraph())
    printfn "%3d %10.2e  %O" neurons result.FinalLoss reading
