// gpt-moe route and gpt-moe specialize: which experts a trained checkpoint's
// tokens go to, and whether that follows the kind of text or the token's
// frequency. The statistics are the library's (Sources/MoE/Analysis/), which a
// pretrained model's loader can use the same way; these are the command lines.
//
//     gpt-moe route --checkpoint runs/gpt-moe/baseline.safetensors --prompt "ROMEO: But soft"
//     gpt-moe specialize --checkpoint runs/gpt-moe/baseline.safetensors --domains Notebooks/domains
//
// Notebooks/part6-specialization.md reads both. Errors follow the program's
// contract: status 2 and the usage for a wrong command line, status 1 and one
// line naming the file for a file that is wrong.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import MoE

/// The options of `route` and `specialize` (the training flags do not apply to them).
struct AnalysisOptions {
    static let commands = ["route", "specialize"]

    var command = "route"
    var checkpoint: String? = nil
    var prompt: String? = nil
    var json = false
    var svg: String? = nil
    var domains: String? = nil
    var text: String? = nil             // the training text, for the frequency bands
    var validationFraction = 0.1        // as `train` split it, so the bands count training tokens only
    var bands = 3                       // terciles: rare, middle, common
    var bandBalance = FrequencyBands.Balance.occurrences
    var permutations = 1000             // p-values down to 1/1001
    var seed: UInt64 = 0
    var topTokens = 5
    var minimumCount = 5                // a token seen fewer times is not ranked by lift
    var out: String? = nil
    var against: String? = nil          // a second checkpoint (another seed): is the partition the same?
    var threads = ProcessInfo.processInfo.activeProcessorCount

    static func parse(_ arguments: [String]) throws -> AnalysisOptions {
        var o = AnalysisOptions()
        var args = ArgumentReader(arguments)
        o.command = args.next() ?? "route"
        while let flag = args.next() {
            switch flag {
            case "--checkpoint": o.checkpoint = try args.value(flag)
            case "--threads": o.threads = try args.int(flag, 1...256)
            case "--prompt" where o.command == "route": o.prompt = try args.value(flag)
            case "--json" where o.command == "route": o.json = true
            case "--svg" where o.command == "route": o.svg = try args.value(flag)
            case "--domains" where o.command == "specialize": o.domains = try args.value(flag)
            case "--text" where o.command == "specialize": o.text = try args.value(flag)
            case "--val-fraction" where o.command == "specialize": o.validationFraction = Double(try args.float(flag, 0.001...0.9))
            case "--bands" where o.command == "specialize": o.bands = try args.int(flag, 2...100)
            case "--band-by" where o.command == "specialize":
                let v = try args.value(flag)
                switch v {
                case "tokens": o.bandBalance = .occurrences
                case "types": o.bandBalance = .types
                default: throw UsageError("--band-by must be tokens or types, got '\(v)'")
                }
            case "--permutations" where o.command == "specialize": o.permutations = try args.int(flag, 1...1_000_000)
            case "--seed" where o.command == "specialize":
                let v = try args.value(flag)
                guard let s = UInt64(v) else { throw UsageError("--seed must be a non-negative integer, got '\(v)'") }
                o.seed = s
            case "--top-tokens" where o.command == "specialize": o.topTokens = try args.int(flag, 0...1000)
            case "--min-count" where o.command == "specialize": o.minimumCount = try args.int(flag, 1...1_000_000)
            case "--out" where o.command == "specialize": o.out = try args.value(flag)
            case "--against" where o.command == "specialize": o.against = try args.value(flag)
            case "-h", "--help": print(Options.usage); exit(0)
            default:
                throw UsageError(flag.hasPrefix("-") ? "\(o.command) does not take the option '\(flag)'"
                                                     : "unexpected argument '\(flag)'")
            }
        }
        guard o.checkpoint != nil else { throw UsageError("\(o.command) needs --checkpoint FILE") }
        if o.command == "route" && o.prompt == nil { throw UsageError("route needs --prompt TEXT") }
        if o.command == "route" && o.json && o.svg == "-" { throw UsageError("--svg - and --json both want stdout") }
        if o.command == "specialize" && o.domains == nil { throw UsageError("specialize needs --domains DIR") }
        return o
    }
}

/// Runs `route` or `specialize` and exits.
func runAnalysisCommand(_ arguments: [String]) -> Never {
    let o: AnalysisOptions
    do { o = try AnalysisOptions.parse(arguments) } catch { fail("\(error)", usage: true, status: 2) }
    Parallel.threads = o.threads
    let loaded: (model: GPT, tokenizer: Tokenizer, metadata: [String: String])
    do { loaded = try GPTCheckpoint.load(from: URL(fileURLWithPath: o.checkpoint!)) } catch { fail("\(error)") }
    guard !loaded.model.moeLayers.isEmpty else {
        fail("\(o.checkpoint!): a dense model (no MoE layer), so there is no routing to show")
    }
    if o.command == "route" { route(o, loaded.model, loaded.tokenizer) } else { specialize(o, loaded.model, loaded.tokenizer) }
    exit(0)
}

// MARK: - route

func route(_ o: AnalysisOptions, _ model: GPT, _ tokenizer: Tokenizer) {
    let ids = tokenizer.encode(o.prompt!)
    // Both depend on the checkpoint (its tokenizer, its context), so they are file errors: one line, status 1.
    guard !ids.isEmpty else { fail("--prompt is empty: there is no token to route") }
    guard ids.count <= model.config.contextLength else {
        fail("--prompt is \(ids.count) tokens, more than the context of \(model.config.contextLength) of \(o.checkpoint!)")
    }
    let routing = model.routing(of: ids, decode: { tokenizer.decode([$0]) })
    if let svg = o.svg {
        let chart = TokenRoutingChart(title: "Top-1 expert per token and MoE block (\(o.checkpoint!.split(separator: "/").last ?? ""))",
                                      routing: routing)
        do { try AtomicFile.write(Data(chart.svg().utf8), to: URL(fileURLWithPath: svg)) } catch { fail("\(error)") }
    }
    if o.json {
        guard let data = try? JSONSerialization.data(withJSONObject: routing.json, options: [.sortedKeys]) else {
            fail("could not encode the routing as JSON")
        }
        print(String(decoding: data, as: UTF8.self))
        return
    }
    let k = model.config.topK
    print("\(ids.count) tokens through MoE blocks \(routing.layers.map { String($0.layer) }.joined(separator: ", ")) "
          + "(\(routing.expertCount) experts, top-\(k)): each token's top-1 expert per block")
    print(RoutingGrid(routing: routing, colour: ProgressBar.stdoutIsTerminal).render())
    let means = routing.layers.map { l in l.weights.map { Double($0.first ?? 0) }.reduce(0, +) / Double(ids.count) }
    print("Mean top-1 weight: " + zip(routing.layers, means).map { String(format: "block %d %.3f", $0.layer, $1) }
        .joined(separator: ", ") + (o.svg.map { "; heatmap in \($0)" } ?? "") + " (--json: every expert and weight)")
}

// MARK: - specialize

func specialize(_ o: AnalysisOptions, _ model: GPT, _ tokenizer: Tokenizer) {
    // The domains: every regular, non-hidden file of the folder, by name (DomainFolder, shared with pretrained-moe).
    let folder = URL(fileURLWithPath: o.domains!)
    let domains: [DomainText]
    do { domains = try DomainFolder.load(o.domains!, encode: { tokenizer.encode($0) }) } catch { fail("\(error)") }

    // The training text's token counts, for the frequency bands.
    let textPath = o.text ?? TinyShakespeare.defaultPath
    let corpus: String
    do { corpus = try TextCorpus.load(URL(fileURLWithPath: textPath)).text } catch {
        fail("\(error) (--text: the text the checkpoint was trained on, for the frequency bands)")
    }
    let trainText = TextCorpus.split(corpus, validationFraction: o.validationFraction).train
    let bands = FrequencyBands(trainingTokens: tokenizer.encode(trainText), vocabularySize: tokenizer.vocabularySize,
                               bands: o.bands, balance: o.bandBalance)

    // Route every domain's tokens, in pieces of the model's context, and run the
    // statistics (SpecializationRun, shared with pretrained-moe).
    let run = SpecializationRun(model: model, domains: domains, bands: bands, permutations: o.permutations, seed: o.seed,
                                topTokens: o.topTokens, minimumCount: o.minimumCount, batch: 16)
    let e = run.expertCount, layers = run.layers
    func decode(_ t: Int) -> String { tokenizer.decode([t]) }

    print("Checkpoint \(o.checkpoint!): MoE blocks \(layers.map { String($0.layer) }.joined(separator: ", ")), "
          + "\(e) experts, top-\(model.config.topK); statistics of each token's top-1 expert")
    // Tokens the tokenizer had no symbol for (a character tokenizer's "unknown") route as one token.
    let unseen = { (list: [Int]) in list.filter { bands.trainingCounts[$0] == 0 }.count }
    print("Domains (\(folder.path)): " + domains.map { d in
        "\(d.name) \(RunReport.int(d.ids.count)) tokens"
            + String(format: " (%.1f%% never seen in training)", 100 * Double(unseen(d.ids)) / Double(d.ids.count))
    }.joined(separator: ", "))
    let bandShares = bands.trainingSharePerBand
    print("Frequency bands (\(o.bandBalance == .occurrences ? "equal shares of the training tokens" : "equal numbers of token types") "
          + "in \(textPath)): " + zip(bands.names, zip(bands.typesPerBand, bandShares))
            .map { String(format: "%@ %d types, %.0f%% of tokens", $0, $1.0, 100 * $1.1) }.joined(separator: "; "))
    print("")
    run.printReport(decode: decode, minimumCount: o.minimumCount)

    var seedComparison: [[String: Any]] = []
    if let other = o.against { seedComparison = compareSeeds(o, other, tokenizer, domains: domains.map(\.ids), layers: layers) }

    guard let out = o.out else { return }
    let directory = URL(fileURLWithPath: out)
    do {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var summary = run.json(decode: decode)   // experts, domains, by_domain, by_frequency_band, token_mutual_information
        summary["checkpoint"] = o.checkpoint!
        summary["domains_folder"] = folder.path
        summary["top_k"] = model.config.topK
        summary["frequency_bands"] = ["text": textPath, "balance": o.bandBalance.rawValue, "names": bands.names,
                                      "types": bands.typesPerBand, "training_share": bandShares] as [String: Any]
        let against: Any = o.against.map { ["checkpoint": $0, "blocks": seedComparison] as [String: Any] } ?? NSNull()
        summary["against"] = against
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data, to: directory.appendingPathComponent("specialization.json"))
        for (kind, list, labels) in [("domain", run.byDomain, domains.map(\.name)), ("band", run.byBand, bands.names)] {
            for l in list {
                let heat = Heatmap(title: "\(kind == "domain" ? "Domain" : "Frequency band") × expert, block \(l.layer): "
                                   + String(format: "I = %.3f bits (chance %.3f, p = %.2g)", l.test.observedBits, l.test.chanceBits, l.test.pValue),
                                   rowLabels: labels, columnLabels: (0..<e).map(String.init), values: l.table.rowShares,
                                   xLabel: "top-1 expert", yLabel: kind == "domain" ? "domain (share of its tokens)" : "band (share of its tokens)",
                                   valueRange: 0...1)
                try AtomicFile.write(Data(heat.svg().utf8), to: directory.appendingPathComponent("\(kind)_expert_block\(l.layer).svg"))
            }
        }
    } catch {
        fail("\(error)")
    }
    print("Wrote \(directory.path)/: specialization.json, " + (run.byDomain.map { "domain_expert_block\($0.layer).svg" }
        + run.byBand.map { "band_expert_block\($0.layer).svg" }).joined(separator: ", "))
}

/// Symmetry-breaking or structure? Route the same tokens through a second
/// checkpoint (another seed, say) and ask, block by block, how much one model's
/// top-1 expert says about the other's: I(expert_A; expert_B) beside its chance
/// level. Expert numbers are arbitrary, so a partition that is the same up to
/// renumbering still gives the full I; `matched` is the share of tokens on which
/// the two agree after the greedy one-to-one renumbering that agrees most.
func compareSeeds(_ o: AnalysisOptions, _ path: String, _ tokenizer: Tokenizer, domains: [[Int]],
                  layers: [TokenRouting.Layer]) -> [[String: Any]] {
    let other: (model: GPT, tokenizer: Tokenizer, metadata: [String: String])
    do { other = try GPTCheckpoint.load(from: URL(fileURLWithPath: path)) } catch { fail("\(error)") }
    guard other.tokenizer.serialized() == tokenizer.serialized() else {
        fail("\(path): --against needs a checkpoint with the same tokenizer as \(o.checkpoint!)")
    }
    let e = layers.isEmpty ? 0 : other.model.routedExpertCount
    // Domain by domain, cut into the same pieces as the first model's routing was.
    var routed: [TokenRouting.Layer] = []
    for domain in domains {
        let r = other.model.routeStream(domain, batch: 16)
        if routed.isEmpty { routed = r.map { TokenRouting.Layer(layer: $0.layer, experts: [], weights: []) } }
        for i in routed.indices { routed[i].experts += r[i].experts; routed[i].weights += r[i].weights }
    }
    var result: [[String: Any]] = []
    print("Against \(path): the same tokens, each block's top-1 expert in the two models")
    for (a, b) in zip(layers, routed) where a.layer == b.layer {
        let table = ContingencyTable(labels: a.topExperts, experts: b.topExperts, labelCount: e, expertCount: e)
        let test = PermutationTest.mutualInformation(labels: a.topExperts, experts: b.topExperts, labelCount: e,
                                                     expertCount: e, permutations: o.permutations, seed: o.seed &+ 3000)
        // Greedy matching: take the largest remaining cell, retire its row and column.
        var rows = Set(0..<e), columns = Set(0..<e), agreed = 0
        let cells = (0..<e).flatMap { r in (0..<e).map { (r, $0) } }.sorted { table.counts[$0.0][$0.1] > table.counts[$1.0][$1.1] }
        for (r, c) in cells where rows.contains(r) && columns.contains(c) {
            agreed += table.counts[r][c]; rows.remove(r); columns.remove(c)
        }
        let matched = Double(agreed) / Double(max(table.total, 1))
        print("  block \(a.layer): I(expert_A; expert_B) = \(test.summary) of at most "
              + String(format: "%.3f bits; %.1f%% of tokens agree after renumbering", min(table.labelEntropyBits, table.expertEntropyBits),
                       100 * matched))
        result.append(["block": a.layer, "mutual_information": test.json, "matched_agreement": matched,
                       "counts": table.counts])
    }
    print("")
    return result
}
