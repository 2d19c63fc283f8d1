// RoutingSetup: a routing configuration as plain settings, and the MoE layer
// it builds. The command-line programs (mnist-moe, its ablation, gpt-moe)
// describe routing with these settings, so the same words mean the same layer
// everywhere, and summary.json can record exactly what ran. The ablation that
// runs them side by side is read in Notebooks/part3-mnist.md, §6.
//
// Every router and balancing method of Router.swift and LoadBalancingLoss.swift
// (and their sibling files) is reachable from here; the defaults are the
// walkthrough's: top-2 softmax routing, renormalised, Switch loss α = 0.1.
import Foundation

public struct RoutingSetup: Equatable {
    /// topk | switch | noisy | expert-choice | deepseek
    public var router = "topk"
    public var k = 2
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

    public static let routers = ["topk", "switch", "noisy", "expert-choice", "deepseek"]
    public static let balancingMethods = ["switch", "cv2", "z", "bias"]

    /// A one-line description for tables: "topk k=2, switch α=0.1".
    public var summary: String {
        var parts = [router == "switch" ? "switch top-1" : "\(router) k=\(k)"]
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

    /// Checks the settings against the layer's expert count; the message names
    /// the setting by its command-line flag, which is how users meet it.
    public func validate(experts: Int) throws {
        func bad(_ message: String) -> RoutingSetupError { RoutingSetupError(message: message) }
        guard RouterRegistry.allNames.contains(router) else {
            throw bad("--router must be one of \(RouterRegistry.allNames.joined(separator: ", ")), got '\(router)'")
        }
        for m in balancing where !RoutingSetup.balancingMethods.contains(m) {
            throw bad("--balance: each method must be one of \(RoutingSetup.balancingMethods.joined(separator: ", ")), got '\(m)'")
        }
        guard k >= 1 && k <= experts else { throw bad("--top-k \(k) must be between 1 and the \(experts) experts") }
        if router == "deepseek" {
            guard groups >= 1 && experts % groups == 0 else {
                throw bad("--groups \(groups) must divide the \(experts) experts")
            }
            guard topGroups >= 1 && topGroups <= groups && topGroups * (experts / groups) >= k else {
                throw bad("--top-groups \(topGroups) must be in 1...\(groups) and keep at least k = \(k) experts")
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
                        sharedExperts: sharedExperts, activation: activation, rng: &rng)
    }

    func makeRouter(modelDim: Int, experts: Int, seed: UInt64) -> Router {
        switch router {
        case "topk":
            return TopKGating(experts: experts, k: k, renormalize: renormalize, order: order,
                              temperature: temperature, expertDropout: expertDropout, seed: seed)
        case "switch":
            return TopKGating(experts: experts, k: 1, renormalize: false, temperature: temperature,
                              expertDropout: expertDropout, seed: seed)
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
                                "aux_weight": Double("\(auxWeight)")!, "shared_experts": sharedExperts]
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

public struct RoutingSetupError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
