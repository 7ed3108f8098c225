/// Tensors, sequences and comparisons shared by the laws.
module Duality.Properties.Support

open System
open TorchSharp
open Duality.Ir

/// A committed fixture file by its path under fixtures/, copied beside the test assembly by the project
/// (CI builds map source paths away, so __SOURCE_DIRECTORY__ does not name a real folder there).
let fixturePath (relative: string) = IO.Path.Combine(AppContext.BaseDirectory, "fixtures", relative)

/// The message FsCheck shows beside a failing case.
let within tolerance (error: float) label =
    if error <= tolerance then true
    else failwithf "%s: scaled error %.3e exceeds %.1e" label error tolerance

let noGrad (f: unit -> 'a) =
    use _ = torch.no_grad()
    f ()

/// Runs f with gradients recorded (also inside noGrad).
let withGrad (f: unit -> 'a) =
    use _ = torch.enable_grad()
    f ()

/// loss().backward() with every tensor made on the way held by a dispose scope until backward returns: a temporary
/// nothing else holds (the product under a sum) may otherwise be finalised, its native tensor freed, while a native call
/// still reads it.
let backwardOf (loss: unit -> torch.Tensor) =
    use _ = torch.NewDisposeScope()
    (loss ()).backward()

/// Whether every attention of the graph is causal (only then can it run one step at a time, and may a late
/// value leave earlier outputs alone).
let causal (g: Graph) = g.Nodes |> Seq.forall (function :? Attention as a -> a.Causal | _ -> true)
