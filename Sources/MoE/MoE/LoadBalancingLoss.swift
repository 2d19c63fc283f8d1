// Load balancing: the `LoadBalancing` seam, and the Switch Transformer loss
// (Fedus et al. 2022), the default.
//
// A balancing method is a separate piece from the router (Router.swift). It
// looks at a batch's routing and either adds an auxiliary loss — a value, and
// its gradient with respect to the router probabilities or the logits — or,
// like DeepSeek-V3's auxiliary-loss-free method, keeps a per-expert bias that
// the router adds when it chooses. An MoELayer holds a list of them, so they
// compose (a Switch loss plus a z-loss, say).
//
// Left alone, a router collapses: experts that get tokens improve, so they get
// more tokens, and the rest starve. The auxiliary loss
//
//     aux = E · Σᵢ fᵢ · Pᵢ
//     fᵢ = (1/N) · #{tokens whose top-k includes expert i}     (Σᵢ fᵢ = k)
//     Pᵢ = (1/N) · Σₙ p[n, i]                                   (Σᵢ Pᵢ = 1)
//
// is smallest when the load is spread evenly. Reading its value: with every
// expert equally used, fᵢ = k/E and Pᵢ = 1/E, so aux = E · E · (k/E)(1/E) = k
// (2 for top-2: the walkthrough's "2.10 at convergence"). If every token goes
// to the same k experts and the router is sure of it, aux = E · k · (1/k) = E.
// Derivation: Notebooks/part1-foundations.md, §5 and §10.
//
// The gradient. f is a count of discrete choices, so it is a constant to the
// gradient; only P carries one:
//
//     ∂aux/∂p[n, i] = E · fᵢ / N
//
// An expert that is already busy (large fᵢ) has its probabilities pushed down
// hardest. The training loss is task loss + α·aux, α = 0.1 by default.

/// The value of the Switch load-balancing loss and its gradient with respect to
/// the router probabilities.
public struct SwitchLoadBalancingLoss {
    /// aux = E · Σ fᵢ Pᵢ (in Double, like the task loss)
    public let value: Double
    /// fᵢ: fraction of tokens routed to expert i (sums to k)   [E]
    public let fractions: [Float]
    /// Pᵢ: mean router probability of expert i (sums to 1)     [E]
    public let meanProbabilities: [Float]

    public init(routing r: Routing) {
        let n = r.tokenCount, e = r.expertCount
        var counts = [Float](repeating: 0, count: e)
        for expert in r.experts where expert >= 0 { counts[expert] += 1 }
        var mean = [Float](repeating: 0, count: e)
        for t in 0..<n { for i in 0..<e { mean[i] += r.probabilities.data[t * e + i] } }
        let invN = n > 0 ? 1 / Float(n) : 0
        fractions = counts.map { $0 * invN }
        meanProbabilities = mean.map { $0 * invN }
        var s = 0.0
        for i in 0..<e { s += Double(fractions[i]) * Double(meanProbabilities[i]) }
        value = Double(e) * s
    }

    /// scale · ∂aux/∂p, the same row for every token: scale · E · fᵢ / N.   -> [N, E]
    public func probabilityGradient(tokens n: Int, scale: Float) -> Tensor {
        let e = fractions.count
        let row = fractions.map { scale * Float(e) * $0 / Float(max(n, 1)) }
        var g = Tensor.zeros([n, e])
        for t in 0..<n { for i in 0..<e { g.data[t * e + i] = row[i] } }
        return g
    }

    /// The value at perfect balance (k) and at total collapse (E), for reading a number.
    public static func referenceValues(experts: Int, k: Int) -> (balanced: Float, collapsed: Float) {
        (Float(k), Float(experts))
    }
}

// MARK: - The seam

/// One balancing method's contribution for a batch: its value and gradients.
public struct BalancingTerm {
    /// The loss, unweighted (0 for a method that is not a loss).
    public var value: Double
    /// ∂value/∂probabilities [N, E], or nil.
    public var probabilityGradient: Tensor?
    /// ∂value/∂logits [N, E], or nil (the z-loss acts on the logits).
    public var logitGradient: Tensor?
    /// ∂value/∂weights [N, K], or nil (the CV² importance loss acts on the
    /// combine weights); added to the task's dL/dw before the router's backward.
    public var weightGradient: Tensor?

    public init(value: Double, probabilityGradient: Tensor? = nil, logitGradient: Tensor? = nil,
                weightGradient: Tensor? = nil) {
        self.value = value
        self.probabilityGradient = probabilityGradient
        self.logitGradient = logitGradient
        self.weightGradient = weightGradient
    }
}

/// A load-balancing method: an auxiliary loss, or a bias on the choice.
public protocol LoadBalancing: AnyObject {
    /// A short name for tables and summary.json ("switch", "cv2", "z", "bias").
    var name: String { get }
    /// Its weight in the training loss (α); ignored by methods that are not losses.
    var weight: Float { get set }
    /// The term for this batch's routing; `logits` [N, E] are the gate's output.
    func evaluate(routing: Routing, logits: Tensor) -> BalancingTerm
    /// A bias the router adds to its scores when choosing experts [E], or nil.
    var selectionBias: [Float]? { get }
    /// Called once per training step, after the optimiser, with the step's routing.
    func update(after routing: Routing)
    /// What the value means for E experts and k slots: at perfect balance and
    /// at total collapse (every token on the same k experts), for reading a number.
    func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)?
    /// State that is not a parameter but shapes the routing (the aux-free
    /// bias), saved in checkpoints beside the weights; nil for pure losses.
    var savedState: Tensor? { get }
    /// Puts back what `savedState` returned; the error says what does not fit.
    func restore(state: Tensor) throws
}

extension LoadBalancing {
    public var selectionBias: [Float]? { nil }
    public func update(after routing: Routing) {}
    public var savedState: Tensor? { nil }
    public func restore(state: Tensor) throws {}
}

/// The Switch loss as a `LoadBalancing` method: E · Σ fᵢ Pᵢ, weight α.
public final class SwitchBalancing: LoadBalancing {
    public var weight: Float
    public init(weight: Float = 0.1) { self.weight = weight }
    public var name: String { "switch" }

    public func evaluate(routing: Routing, logits: Tensor) -> BalancingTerm {
        let loss = SwitchLoadBalancingLoss(routing: routing)
        return BalancingTerm(value: loss.value,
                             probabilityGradient: loss.probabilityGradient(tokens: routing.tokenCount, scale: 1))
    }

    public func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)? {
        let r = SwitchLoadBalancingLoss.referenceValues(experts: experts, k: k)
        return (Double(r.balanced), Double(r.collapsed))
    }
}
