/// Data-last F# functions over the same IR as the C# builders.
module Duality.FSharp.Layers

open Duality.Ir
open Duality.Builders

/// Starts a model at a named input of the given width.
let input name features = Model.Input(name, features)

/// An affine map to `outFeatures` at every step.
let projection outFeatures (b: SequenceBuilder) = b.Projection(outFeatures)

/// Elementwise nonlinearity.
let activation kind (b: SequenceBuilder) = b.Activation(kind)

/// x + body x.
let residual (body: SequenceBuilder -> SequenceBuilder) (b: SequenceBuilder) = b.Residual(System.Func<_, _> body)

/// The verified graph.
let build (b: SequenceBuilder) : Graph = b.Build()
