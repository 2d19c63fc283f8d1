// RoutingFlags: the command-line words for routing and balancing, parsed once
// for every program that trains an MoE (mnist-moe, its ablation, gpt-moe).
//
// A routing flag is recorded as a *change* to a `RoutingSetup` rather than as a
// finished setup, because a program may apply the same flags to several
// starting points: mnist-moe applies them to the walkthrough's default, gpt-moe
// to each of its presets. Errors are one line that names the flag.
//
// The methods behind the words: Notebooks/part1-foundations.md, §4–§14, whose
// §6 maps each word to its section; run side by side in Notebooks/part3-mnist.md, §6.
import Foundation

public struct RoutingFlags {
    /// The changes asked for, in command-line order, with the words that asked.
    public private(set) var changes: [(words: [String], apply: (inout RoutingSetup) -> Void)] = []
    private var temperatureStart: Float? = nil
    private var temperatureEnd: Float? = nil
    private var temperatureShape = TemperatureSchedule.Shape.linear

    public init() {}

    /// The words the command line used, for summary.json ("--router noisy --capacity 1.25").
    public var words: [String] { changes.flatMap(\.words) }

    /// `setup` with every recorded change applied, in order.
    public func applied(to setup: RoutingSetup) -> RoutingSetup {
        var s = setup
        for change in changes { change.apply(&s) }
        return s
    }

    /// The value of --top-k, if given (programs check it against their expert count).
    public private(set) var topK: Int? = nil

    /// If `flag` is a routing flag, reads its value from `args`, records the
    /// change and returns true; else returns false and reads nothing.
    public mutating func parse(_ flag: String, from args: inout ArgumentReader) throws -> Bool {
        func bad(_ message: String) -> UsageError { UsageError(message) }
        func record(_ text: String?, _ body: @escaping (inout RoutingSetup) -> Void) {
            changes.append((text.map { [flag, $0] } ?? [flag], body))
        }
        switch flag {
        case "--top-k":
            let k = try args.int(flag, RoutingSetup.Limits.k)
            topK = k
            record("\(k)") { $0.k = k }
        case "--aux-weight":
            let alpha = try args.float(flag, RoutingSetup.Limits.auxWeight)
            record("\(alpha)") { $0.auxWeight = alpha }
        case "--router":
            let router = try args.value(flag)
            guard RouterRegistry.allNames.contains(router) else {
                let guess = nearMiss(router, in: RouterRegistry.allNames).map { "; did you mean \($0)?" } ?? ""
                throw bad("--router must be one of \(RouterRegistry.allNames.joined(separator: ", ")), got '\(router)'\(guess)")
            }
            record(router) { $0.router = router }
        case "--order":
            let text = try args.value(flag)
            guard let order = TopKGating.Order(rawValue: text) else {
                throw bad("--order must be softmax-topk or topk-softmax, got '\(text)'")
            }
            record(text) { $0.order = order }
        case "--no-renormalize": record(nil) { $0.renormalize = false }
        case "--gate-noise":
            let text = try args.value(flag)
            guard let noise = TopKGating.Noise(rawValue: text) else {
                throw bad("--gate-noise must be learned or none, got '\(text)'")
            }
            record(text) { $0.gateNoise = noise }
        case "--gate-bias": record(nil) { $0.gateBias = true }
        case "--no-gate-bias": record(nil) { $0.gateBias = false }
        case "--temperature": temperatureStart = try args.float(flag, RoutingSetup.Limits.temperature)
        case "--temperature-end": temperatureEnd = try args.float(flag, RoutingSetup.Limits.temperature)
        case "--temperature-schedule":
            let text = try args.value(flag)
            guard let shape = TemperatureSchedule.Shape(rawValue: text), shape != .constant else {
                throw bad("--temperature-schedule must be linear or cosine, got '\(text)'")
            }
            temperatureShape = shape
        case "--expert-dropout":
            let p = try args.float(flag, RoutingSetup.Limits.expertDropout)
            record("\(p)") { $0.expertDropout = p }
        case "--capacity":
            let factor = try args.double(flag, RoutingSetup.Limits.capacityFactor)
            record("\(factor)") { $0.capacityFactor = factor }
        case "--overflow":
            let text = try args.value(flag)
            guard let policy = Capacity.Overflow(rawValue: text) else {
                throw bad("--overflow must be token-order, score or choice-order, got '\(text)'")
            }
            record(text) { $0.overflow = policy }
        case "--shared-experts":
            let n = try args.int(flag, RoutingSetup.Limits.sharedExperts)
            record("\(n)") { $0.sharedExperts = n }
        case "--balance":
            let text = try args.value(flag)
            // Empty items count: "" and "switch," are mistakes, not "none" or "switch".
            let list = text == "none" ? [] : text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            for m in list where !RoutingSetup.balancingMethods.contains(m) {
                throw bad(m.isEmpty ? "--balance: '\(text)' has an empty method (expected a comma list of switch, cv2, z, bias, or none)"
                                    : "--balance: '\(m)' is not one of switch, cv2, z, bias (or none)")
            }
            guard Set(list).count == list.count else { throw bad("--balance lists a method twice: '\(text)'") }
            record(text) { $0.balancing = list }
        case "--z-weight":
            let w = try args.float(flag, RoutingSetup.Limits.zWeight)
            record("\(w)") { $0.zWeight = w }
        case "--bias-rate":
            let u = try args.float(flag, RoutingSetup.Limits.biasRate)
            record("\(u)") { $0.biasRate = u }
        case "--groups":
            let g = try args.int(flag, RoutingSetup.Limits.groups)
            record("\(g)") { $0.groups = g }
        case "--top-groups":
            let m = try args.int(flag, RoutingSetup.Limits.groups)
            record("\(m)") { $0.topGroups = m }
        case "--routed-scaling":
            let scale = try args.float(flag, RoutingSetup.Limits.routedScaling)
            record("\(scale)") { $0.routedScaling = scale }
        case "--expert-choice-factor":
            let factor = try args.double(flag, RoutingSetup.Limits.expertChoiceFactor)
            record("\(factor)") { $0.expertChoiceFactor = factor }
        default:
            return false
        }
        return true
    }

    /// After the last argument: --temperature, --temperature-end and
    /// --temperature-schedule become one change (a constant, or a schedule).
    public mutating func finish() {
        guard temperatureStart != nil || temperatureEnd != nil else { return }
        let start = temperatureStart ?? 1, end = temperatureEnd, shape = temperatureShape
        let schedule = TemperatureSchedule(start: start, end: end, shape: shape)
        changes.append((["--temperature", end.map { "\(start)→\($0) \(shape.rawValue)" } ?? "\(start)"],
                        { $0.temperature = schedule }))
        temperatureStart = nil
        temperatureEnd = nil
    }

    /// The usage lines of every routing flag, indented like the programs' own;
    /// a program names its own defaults for k and α.
    public static func usage(topK: String = "2", auxWeight: String = "0.1", gateNoise: String = "learned",
                             gateBias: String = "off") -> String {
        """
      --top-k N          experts per token (default \(topK))
      --aux-weight X     α, weight of the Switch (or CV²) balancing loss; 0 turns it off
                         (default \(auxWeight))
      --router R         topk (default), switch (top-1, output scaled by its probability),
                         noisy (noisy top-k, Shazeer 2017), expert-choice (Zhou 2022),
                         deepseek (sigmoid scores, group-limited top-k, DeepSeek-V3),
                         or a registered one: the exercises' and your own
                         (Sources/Exercises/YourSubmission.swift):
    \(RouterRegistry.usage)
      --order O          softmax-topk (default) or topk-softmax (softmax over the chosen logits)
      --no-renormalize   top-k weights are the raw probabilities, not rescaled to sum to 1
      --gate-noise N     learned (eps * softplus(noise_weights) added to the logits in
                         training, Part 2) or none; topk and switch only (default \(gateNoise))
      --gate-bias        give the gate Linear a bias; --no-gate-bias removes it (default \(gateBias))
      --temperature T    router temperature (default 1); with --temperature-end, the start
      --temperature-end T  anneal to T over training ...
      --temperature-schedule S  ... linearly or by cosine (linear | cosine; default linear)
      --expert-dropout P each expert sits out a training step with probability P (default 0)
      --capacity F       each expert takes at most ceil(F * tokens * k / experts) tokens per
                         batch; the overflow is dropped (contributes zero) and counted
      --overflow P       who is dropped first: token-order (default), score, choice-order
      --shared-experts N experts every token uses beside the routed ones (default 0)
      --balance LIST     comma-separated balancing methods: switch (default), cv2, z, bias,
                         or none. switch/cv2 use --aux-weight; z uses --z-weight; bias is
                         DeepSeek-V3's auxiliary-loss-free bias, step --bias-rate
      --z-weight X       weight of the router z-loss (default 0.001)
      --bias-rate U      step of the auxiliary-loss-free bias (default 0.001)
      --groups G         deepseek: experts in G groups (default 1) ...
      --top-groups M     ... of which the best M are searched (default 1)
      --routed-scaling S deepseek: scale of the combine weights (default 1)
      --expert-choice-factor F  expert-choice: each expert takes ceil(F * tokens * k / experts)
    """
    }
}
