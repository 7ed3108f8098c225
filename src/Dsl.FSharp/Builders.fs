namespace Duality.FSharp

open Duality.Ir

/// Layers written one per line, applied in order: `layers { Layer.rmsNorm; Layer.projection 64 }`.
type LayersBuilder(finish: Layers -> Layers) =
    /// One line of the block: the layers it adds.
    member _.Yield(layer: Layers) : Layers = layer
    /// An empty block: no layers, the sequence unchanged.
    member _.Zero() : Layers = id
    /// `first`, then `rest`.
    member _.Combine(first: Layers, rest: Layers) : Layers = first >> rest
    /// The block's layers, built at once (the block holds no effects to delay).
    member _.Delay(f: unit -> Layers) : Layers = f ()
    /// The block's layers passed through the builder's finishing step (a scope or a residual).
    member _.Run(layer: Layers) : Layers = finish layer

/// The branches and activation of a gate: `gated { value (...); gate (...); activation ActivationKind.SiLU }`.
type GateSpec = { Value: Layers; Gate: Layers; Activation: ActivationKind }

/// The computation expression behind `gated`: each branch defaults to the identity, the activation to `Identity`.
type GateBuilder() =
    /// The default gate: value x * gate x, both the identity.
    member _.Yield(()) = { Value = id; Gate = id; Activation = ActivationKind.Identity }
    /// `value (layers)`: the value branch, from the current sequence.
    [<CustomOperation("value")>]
    member _.Value(spec: GateSpec, branch: Layers) = { spec with Value = branch }
    /// `gate (layers)`: the gate branch, from the current sequence.
    [<CustomOperation("gate")>]
    member _.Gate(spec: GateSpec, branch: Layers) = { spec with Gate = branch }
    /// `activation kind`: applied to the gate branch before the product.
    [<CustomOperation("activation")>]
    member _.Activation(spec: GateSpec, kind: ActivationKind) = { spec with Activation = kind }
    /// The gate as layers: value x * activation (gate x), named "gate" by default.
    member _.Run(spec: GateSpec) : Layers = Layer.gate spec.Value spec.Gate spec.Activation

/// The computation expressions, opened with `Duality.FSharp`.
[<AutoOpen>]
module Builders =
    /// A sequence of layers.
    let layers = LayersBuilder id

    /// A sequence of layers whose nodes are named under "name/".
    let block name = LayersBuilder(Layer.scope name)

    /// x + (the layers)(x), named `name`; its nodes under "name/".
    let residual name = LayersBuilder(Layer.residualNamed name)

    /// value x * activation (gate x).
    let gated = GateBuilder()
