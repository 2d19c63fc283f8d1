// RoutingSetup: a routing configuration as plain settings, and the MoE layer
// it builds. The command-line programs (mnist-moe, its ablation, gpt-moe)
// describe routing with these settings, so the same words mean the same layer
// everywhere, and summary.json can record exactly what ran. The ablation that
// runs them side by side is read in Notebooks/part3-mnist.md, §6.
//
// Every router and balancing method of Router.swift and LoadBalancingLoss.swift
// (and their sibling files) is reachable from here; the defaults are the
// walkthrough's: a bias-free gate, learned gate noise in training, top-2
// softmax routing, renormalised, Switch loss α = 0.1.
import Foundation

public struct RoutingSetup: Equatable {
    /// topk | switch | noisy | expert-choice | deepseek
    public var router = "topk"
    public var k = 2
    /// Gate noise of the topk and switch routers: Part 2's learned ε·softplus(noise_weights), or none.
    public var gateNoise = TopKGating.Noise.learned
    /// A bias in the gate Linear(D → E); Part 2 argues against one.
    public var gateBias = false
    public var renormalize = true
    public var order = TopKGating.Order.softmaxThenTopK
    public var temperature = TemperatureSchedule.none
    public var expertDropout: Float = 0
    /// Per-expert capacity factor (nil: dropless) and who is dropped first.
    public var capacityFactor: Double? = nil
    public var overflow = Capacity.Overflow.tokenOrder
    /// Experts every token uses beside the routed ones (DeepSeekMoE).
    public var sharedExperts = 0
    /// Balancing methods, in order: switch | cv2 | z | bias. Empty: none.
    public var balancing = ["switch"]
    /// α of the Switch and CV² losses.
    public var auxWeight: Float = 0.1
    /// Weight of the router z-loss.
    public var zWeight: Float = 1e-3
    /// Step u of the auxiliary-loss-free bias.
    public var biasRate: Float = 1e-3
    /// DeepSeek-V3 router: expert groups, groups kept per token, weight scale.
    public var groups = 1
    public var topGroups = 1
    public var routedScaling: Float = 1
    /// Expert choice: each expert takes ⌈factor · N · k / E⌉ tokens.
    public var expertChoiceFactor: Double = 1

    public init() {}

    /// The GPT's starting point: the walkthrough's settings with the gate the
    /// GPT was first measured with, a bias and no noise (Notebooks/part4-gpt.md).
    public static var gptDefault: RoutingSetup {
        var r = RoutingSetup()
        r.gateNoise = .none
        r.gateBias = true
        return r
    }

    public static let routers = ["topk", "switch", "noisy", "expert-choice", "deepseek"]
    public static let balancingMethods = ["switch", "cv2", "z", "bias"]

    /// A one-line description for tables: "topk k=2, switch α=0.1".
    public var summary: String {
        var parts = [router == "switch" ? "switch top-1" : "\(router) k=\(k)"]
        if usesGateNoise { parts.append("learned noise") }
        if gateBias { parts.append("gate bias") }
        if router == "topk" && order == .topKThenSoftmax { parts.append("topk→softmax") }
        if router == "topk" && !renormalize { parts.append("not renormalised") }
        if temperature != .none {
            parts.append(temperature.shape == .constant ? "T=\(temperature.start)"
                         : "T \(temperature.start)→\(temperature.end) \(temperature.shape.rawValue)")
        }
        if expertDropout > 0 { parts.append("expert dropout \(expertDropout)") }
        if let c = capacityFactor { parts.append("capacity \(c) \(overflow.rawValue)") }
        if sharedExperts > 0 { parts.append("\(sharedExperts) shared") }
        let losses = balancing.map { m -> String in
            switch m {
            case "switch", "cv2": return "\(m) α=\(auxWeight)"
            case "z": return "z \(zWeight)"
            default: return "bias u=\(biasRate)"
            }
        }
        parts.append(losses.isEmpty ? "no balancing" : losses.joined(separator: " + "))
        return parts.joined(separator: ", ")
    }

    /// Whether the router built from these settings adds learned gate noise.
    public var usesGateNoise: Bool { gateNoise == .learned && (router == "topk" || router == "switch") }

    /// The ranges every setting must lie in. The command line (RoutingFlags)
    /// reads its flags against these, and `validate` checks them again, so a
    /// setting that comes from a file (a GPT checkpoint's "routing") meets the
    /// same bounds as one typed on the command line.
    public enum Limits {
        public static let k: ClosedRange<Int> = 1...1024
        public static let temperature: ClosedRange<Float> = 0.01...100
        public static let expertDropout: ClosedRange<Float> = 0...0.99
        public static let capacityFactor: ClosedRange<Float> = 0.01...1000
        public static let sharedExperts: ClosedRange<Int> = 0...64
        public static let auxWeight: ClosedRange<Float> = 0...100
        public static let zWeight: ClosedRange<Float> = 0...100
        public static let biasRate: ClosedRange<Float> = 0...1
        public static let groups: ClosedRange<Int> = 1...1024
        public static let routedScaling: ClosedRange<Float> = 0.001...1000
        public static let expertChoiceFactor: ClosedRange<Float> = 0.01...1000
    }

    /// Checks every setting (its range, and against the layer's expert count).
    /// The error names the setting by its command-line flag, which is how users
    /// meet it, and by its field in a checkpoint's "routing" JSON.
    public func validate(experts: Int) throws {
        func bad(_ flag: String, _ field: String, _ problem: String) -> RoutingSetupError {
            RoutingSetupError(flag: flag, field: field, problem: problem)
        }
        func check<T: Comparable>(_ value: T, _ range: ClosedRange<T>, _ flag: String, _ field: String) throws {
            // `range.contains` is false for NaN, so a NaN from a file is rejected too.
            guard range.contains(value) else {
                throw bad(flag, field, "must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
            }
        }
        guard RouterRegistry.allNames.contains(router) else {
            throw bad("--router", "router", "must be one of \(RouterRegistry.allNames.joined(separator: ", ")), got '\(router)'")
        }
        for m in balancing where !RoutingSetup.balancingMethods.contains(m) {
            throw bad("--balance", "balancing", "each method must be one of \(RoutingSetup.balancingMethods.joined(separator: ", ")), got '\(m)'")
        }
        guard Set(balancing).count == balancing.count else {
            throw bad("--balance", "balancing", "lists a method twice: \(balancing.joined(separator: ","))")
        }
        guard k >= 1 && k <= experts else { throw bad("--top-k", "k", "\(k) must be between 1 and the \(experts) experts") }
        try check(temperature.start, Limits.temperature, "--temperature", "temperature")
        try check(temperature.end, Limits.temperature, "--temperature-end", "temperature")
        try check(expertDropout, Limits.expertDropout, "--expert-dropout", "expert_dropout")
        if let c = capacityFactor {
            // As a Float, the flag's type (1e300 becomes inf, out of range).
            try check(Float(c), Limits.capacityFactor, "--capacity", "capacity_factor")
        }
        try check(sharedExperts, Limits.sharedExperts, "--shared-experts", "shared_experts")
        try check(auxWeight, Limits.auxWeight, "--aux-weight", "aux_weight")
        try check(zWeight, Limits.zWeight, "--z-weight", "z_weight")
        try check(biasRate, Limits.biasRate, "--bias-rate", "bias_rate")
        try check(groups, Limits.groups, "--groups", "groups")
        try check(topGroups, Limits.groups, "--top-groups", "top_groups")
        try check(routedScaling, Limits.routedScaling, "--routed-scaling", "routed_scaling")
        try check(Float(expertChoiceFactor), Limits.expertChoiceFactor, "--expert-choice-factor", "expert_choice_factor")
        if router == "deepseek" {
            guard experts % groups == 0 else {
                throw bad("--groups", "groups", "\(groups) must divide the \(experts) experts")
            }
            guard topGroups <= groups && topGroups * (experts / groups) >= k else {
                throw bad("--top-groups", "top_groups", "\(topGroups) must be in 1...\(groups) and keep at least k = \(k) experts")
            }
        }
    }

    /// The MoE layer these settings describe; call `validate` first (this
    /// stops on settings it rejects). Weights come from `rng` in the order
    /// gate, experts, shared experts (router weights, if any, from their own seed).
    public func makeLayer(modelDim: Int, hiddenDim: Int, experts: Int, activation: ExpertActivation = .relu,
                          seed: UInt64, rng: inout Xoshiro256) -> MoELayer {
        do { try validate(experts: experts) } catch { preconditionFailure("RoutingSetup: \(error)") }
        let router = makeRouter(modelDim: modelDim, experts: experts, seed: seed)
        return MoELayer(modelDim: modelDim, hiddenDim: hiddenDim, experts: experts, router: router,
                        balancing: makeBalancing(experts: experts),
                        capacity: capacityFactor.map { Capacity(factor: $0, overflow: overflow) },
                        sharedExperts: sharedExperts, gateBias: gateBias, activation: activation, rng: &rng)
    }

    func makeRouter(modelDim: Int, experts: Int, seed: UInt64) -> Router {
        switch router {
        case "topk":
            return TopKGating(experts: experts, k: k, renormalize: renormalize, order: order,
                              temperature: temperature, expertDropout: expertDropout, noise: gateNoise, seed: seed)
        case "switch":
            return TopKGating(experts: experts, k: 1, renormalize: false, temperature: temperature,
                              expertDropout: expertDropout, noise: gateNoise, seed: seed)
        case "noisy":
            return NoisyTopKGating(experts: experts, k: k, modelDim: modelDim, seed: seed)
        case "expert-choice":
            return ExpertChoiceRouter(experts: experts, k: k, capacityFactor: expertChoiceFactor)
        case "deepseek":
            return DeepSeekV3Router(experts: experts, k: k, groups: groups, topGroups: topGroups,
                                    routedScaling: routedScaling)
        default:
            // A router registered by the program (RouterRegistry.swift).
            guard let entry = RouterRegistry.entry(router) else { preconditionFailure("RoutingSetup: unknown router '\(router)'") }
            return entry.make(RouterRequest(experts: experts, k: k, modelDim: modelDim, seed: seed))
        }
    }

    func makeBalancing(experts: Int) -> [LoadBalancing] {
        balancing.compactMap { m -> LoadBalancing? in
            switch m {
            case "switch": return SwitchBalancing(weight: auxWeight)
            case "cv2": return ImportanceLoadBalancing(weight: auxWeight)
            case "z": return RouterZLoss(weight: zWeight)
            case "bias": return AuxLossFreeBalancing(updateRate: biasRate, experts: experts)
            default: return nil
            }
        }
    }

    /// For summary.json.
    public var json: [String: Any] {
        var j: [String: Any] = ["router": router, "k": router == "switch" ? 1 : k, "renormalize": renormalize,
                                "order": order.rawValue, "balancing": balancing,
                                "aux_weight": Double("\(auxWeight)")!, "shared_experts": sharedExperts,
                                "gate_noise": usesGateNoise ? "learned" : "none", "gate_bias": gateBias]
        if temperature != .none {
            j["temperature"] = ["start": Double("\(temperature.start)")!, "end": Double("\(temperature.end)")!,
                                "schedule": temperature.shape.rawValue]
        }
        if expertDropout > 0 { j["expert_dropout"] = Double("\(expertDropout)")! }
        if let c = capacityFactor { j["capacity_factor"] = c; j["overflow"] = overflow.rawValue }
        if balancing.contains("z") { j["z_weight"] = Double("\(zWeight)")! }
        if balancing.contains("bias") { j["bias_rate"] = Double("\(biasRate)")! }
        if router == "deepseek" { j["groups"] = groups; j["top_groups"] = topGroups; j["routed_scaling"] = Double("\(routedScaling)")! }
        if router == "expert-choice" { j["expert_choice_factor"] = expertChoiceFactor }
        return j
    }
}

/// A routing setting out of range: `description` names the command-line flag
/// ("--expert-dropout must be in 0...0.99, got 5.0"); `field` is its key in a
/// checkpoint's "routing" JSON, for errors about a file.
public struct RoutingSetupError: Error, CustomStringConvertible {
    public let message: String
    public var field: String? = nil
    /// The problem without the flag ("must be in 0...0.99, got 5.0").
    public var problem: String

    public init(message: String) { self.message = message; problem = message }
    public init(flag: String, field: String, problem: String) {
        message = "\(flag) \(problem)"
        self.field = field
        self.problem = problem
    }
    public var description: String { message }
    /// How a file's error reads it: `field "expert_dropout" must be in 0...0.99, got 5.0`.
    public var fileDescription: String { field.map { "field \"\($0)\" \(problem)" } ?? message }
}
