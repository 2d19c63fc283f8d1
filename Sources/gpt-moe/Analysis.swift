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

/// The routing as text: rows of tokens, under each the top-1 expert in every
/// MoE block, wrapped to fit 80 columns; on a terminal each expert number has
/// a background colour of its own, so runs of one expert show at a glance.
struct RoutingGrid {
    let routing: TokenRouting
    let colour: Bool
    let width = 80

    /// ANSI 256-colour backgrounds, the Okabe–Ito hues of the SVG where the palette has them.
    static let palette = [32, 166, 36, 175, 178, 74, 227, 245, 90, 130, 22, 160, 25, 214, 99, 58]

    func render() -> String {
        let e = max(routing.expertCount, 1)
        let tokens = routing.tokens.map { TokenRoutingChart.visible($0, limit: 5) }
        let cell = max(tokens.map(\.count).max() ?? 1, String(e - 1).count) + 1
        let label = max(6, routing.layers.map { "block \($0.layer)".count }.max() ?? 6) + 1
        let perLine = max(1, (width - label) / cell)
        func pad(_ s: String, _ w: Int) -> String { s + String(repeating: " ", count: max(0, w - s.count)) }
        var lines: [String] = []
        var start = 0
        while start < tokens.count {
            let range = start..<min(tokens.count, start + perLine)
            let header = pad("token", label) + range.map { pad(tokens[$0], cell) }.joined()
            lines.append(String(header.reversed().drop(while: { $0 == " " }).reversed()))
            for layer in routing.layers {
                var row = pad("block \(layer.layer)", label)
                for t in range {
                    let expert = layer.experts[t].first
                    let text = pad(expert.map(String.init) ?? "-", cell - 1)
                    if colour, let expert {
                        row += "\u{1B}[48;5;\(Self.palette[expert % Self.palette.count])m\u{1B}[38;5;16m\(text)\u{1B}[0m "
                    } else {
                        row += text + " "
                    }
                }
                lines.append(String(row.reversed().drop(while: { $0 == " " }).reversed()))
            }
            lines.append("")
            start += perLine
        }
        return lines.joined(separator: "\n")
    }
}

// MARK: - specialize

func specialize(_ o: AnalysisOptions, _ model: GPT, _ tokenizer: Tokenizer) {
    // The domains: every regular, non-hidden file of the folder, by name.
    let folder = URL(fileURLWithPath: o.domains!)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
        fail("\(folder.path): no such folder (--domains wants a folder with one UTF-8 text file per domain)")
    }
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
        .filter { !$0.hasPrefix(".") }.sorted()
    var domains: [(name: String, ids: [Int])] = []
    for name in names {
        let url = folder.appendingPathComponent(name)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue else { continue }
        guard let data = try? Data(contentsOf: url) else { fail("\(url.path): cannot be read") }
        guard let text = String(data: data, encoding: .utf8) else { fail("\(url.path): not valid UTF-8 text") }
        let ids = tokenizer.encode(text)
        guard !ids.isEmpty else { fail("\(url.path): empty (a domain needs some text)") }
        domains.append(((name as NSString).deletingPathExtension, ids))
    }
    guard !domains.isEmpty else { fail("\(folder.path): no domain files (expected one UTF-8 text file per domain)") }
    guard domains.count >= 2 else { fail("\(folder.path): only one domain file (\(domains[0].name)); a comparison needs two or more") }

    // The training text's token counts, for the frequency bands.
    let textPath = o.text ?? TinyShakespeare.defaultPath
    let corpus: String
    do { corpus = try TextCorpus.load(URL(fileURLWithPath: textPath)).text } catch {
        fail("\(error) (--text: the text the checkpoint was trained on, for the frequency bands)")
    }
    let trainText = TextCorpus.split(corpus, validationFraction: o.validationFraction).train
    let bands = FrequencyBands(trainingTokens: tokenizer.encode(trainText), vocabularySize: tokenizer.vocabularySize,
                               bands: o.bands, balance: o.bandBalance)

    // Route every domain's tokens, in pieces of the model's context.
    let e = model.routedExpertCount
    var ids: [Int] = [], domainLabels: [Int] = []
    var layers: [TokenRouting.Layer] = []
    for (d, domain) in domains.enumerated() {
        let routed = model.routeStream(domain.ids, batch: 16)
        if layers.isEmpty { layers = routed.map { TokenRouting.Layer(layer: $0.layer, experts: [], weights: []) } }
        for i in layers.indices { layers[i].experts += routed[i].experts; layers[i].weights += routed[i].weights }
        ids += domain.ids
        domainLabels += [Int](repeating: d, count: domain.ids.count)
    }
    let bandLabels = ids.map { bands.bandOfToken[$0] }
    let byDomain = Specialization.analyse(layers: layers, tokenIds: ids, labels: domainLabels, labelCount: domains.count,
                                          expertCount: e, permutations: o.permutations, seed: o.seed,
                                          topTokens: o.topTokens, minimumCount: o.minimumCount, conditionOnToken: true)
    // For scale: what the expert says about the token itself (ids made compact: 0..<distinct).
    let distinct = Array(Set(ids)).sorted()
    let compact = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($1, $0) })
    let tokenLabels = ids.map { compact[$0]! }
    let byToken = layers.enumerated().map { i, l in
        PermutationTest.mutualInformation(labels: tokenLabels, experts: l.topExperts, labelCount: distinct.count,
                                          expertCount: e, permutations: o.permutations, seed: o.seed &+ 2000 &+ UInt64(i))
    }
    let byBand = Specialization.analyse(layers: layers, tokenIds: ids, labels: bandLabels, labelCount: bands.bandCount,
                                        expertCount: e, permutations: o.permutations, seed: o.seed &+ 1000,
                                        topTokens: o.topTokens, minimumCount: o.minimumCount)
    func decode(_ t: Int) -> String { tokenizer.decode([t]) }
    // The stricter null for "frequency lines": the router sorts tokens by their
    // identity anyway (I(token; expert) above), so any grouping of the token
    // types carries some information about the expert. Shuffle the band of each
    // vocabulary entry (the same number of types per band) and see how much a
    // random grouping carries; frequency matters only if the real bands beat it.
    let groupingDraws = min(o.permutations, 200)
    let randomGrouping = layers.enumerated().map { i, l -> GroupingNull in
        var shuffledBands = bands.bandOfToken
        var rng = Xoshiro256(seed: o.seed &+ 4000 &+ UInt64(i))
        let top = l.topExperts
        let observed = byBand[i].test.observedBits
        var values: [Double] = []
        for _ in 0..<groupingDraws {
            rng.shuffle(&shuffledBands)
            values.append(ContingencyTable(labels: ids.map { shuffledBands[$0] }, experts: top, labelCount: bands.bandCount,
                                           expertCount: e).mutualInformationBits)
        }
        let mean = values.reduce(0, +) / Double(values.count)
        let sd = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
        return GroupingNull(mean: mean, standardDeviation: sd, maximum: values.max() ?? .nan,
                            atLeastObserved: values.filter { $0 >= observed - 1e-12 }.count, draws: groupingDraws)
    }

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
    print("For scale, what the top-1 expert says about the token itself: "
          + zip(layers, byToken).map { "block \($0.layer) I(token; expert) = \($1.summary)" }.joined(separator: "; "))
    print("")
    report(byDomain, labelNames: domains.map(\.name), labelTitle: "Domain", decode: decode, minimumCount: o.minimumCount)
    report(byBand, labelNames: bands.names, labelTitle: "Band", decode: decode, minimumCount: o.minimumCount,
           characteristicTokens: false,   // the same tokens as above: lift does not depend on the label
           randomGrouping: randomGrouping)

    var seedComparison: [[String: Any]] = []
    if let other = o.against { seedComparison = compareSeeds(o, other, tokenizer, domains: domains.map(\.ids), layers: layers) }

    guard let out = o.out else { return }
    let directory = URL(fileURLWithPath: out)
    do {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let summary: [String: Any] = [
            "checkpoint": o.checkpoint!, "domains_folder": folder.path, "experts": e, "top_k": model.config.topK,
            "domains": domains.map { ["name": $0.name, "tokens": $0.ids.count] as [String: Any] },
            "frequency_bands": ["text": textPath, "balance": o.bandBalance.rawValue, "names": bands.names,
                                "types": bands.typesPerBand, "training_share": bandShares] as [String: Any],
            "by_domain": byDomain.map { $0.json(labelNames: domains.map(\.name), decode: decode) },
            "by_frequency_band": zip(byBand, randomGrouping).map { band, grouping -> [String: Any] in
                var j = band.json(labelNames: bands.names, decode: decode)
                j["random_type_grouping"] = grouping.json   // chance_* over shuffled band-of-type assignments
                return j
            },
            "against": o.against.map { ["checkpoint": $0, "blocks": seedComparison] as [String: Any] } ?? NSNull(),
            "token_mutual_information": zip(layers, byToken).map { l, t -> [String: Any] in
                ["layer": l.layer, "distinct_tokens": distinct.count, "mutual_information": t.json]
            },
        ]
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data, to: directory.appendingPathComponent("specialization.json"))
        for (kind, list, labels) in [("domain", byDomain, domains.map(\.name)), ("band", byBand, bands.names)] {
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
    print("Wrote \(directory.path)/: specialization.json, " + (byDomain.map { "domain_expert_block\($0.layer).svg" }
        + byBand.map { "band_expert_block\($0.layer).svg" }).joined(separator: ", "))
}

/// Per MoE block: the share table, the mutual information beside its chance level, the characteristic tokens.
func report(_ layers: [LayerSpecialization], labelNames: [String], labelTitle: String, decode: (Int) -> String,
            minimumCount: Int, characteristicTokens: Bool = true, randomGrouping: [GroupingNull] = []) {
    guard let first = layers.first else { return }
    let e = first.table.expertCount
    for (index, l) in layers.enumerated() {
        print("\(labelTitle) × expert, MoE block \(l.layer): share of each \(labelTitle.lowercased())'s tokens per top-1 expert")
        var table = TextTable(headers: [labelTitle, "Tokens"] + (0..<e).map { "E\($0)" })
        for (r, name) in labelNames.enumerated() {
            table.addRow([name, RunReport.int(l.table.labelTotals[r])] + l.table.rowShares[r].map { String(format: "%.0f%%", 100 * $0) })
        }
        table.addRow(["all", RunReport.int(l.table.total)] + l.table.expertShares.map { String(format: "%.0f%%", 100 * $0) })
        print(table.render())
        print(String(format: "I(%@; expert) = ", labelTitle.lowercased()) + l.test.summary
              + String(format: "; of at most H(%@) = %.3f bits", labelTitle.lowercased(), l.table.labelEntropyBits))
        if index < randomGrouping.count {
            let g = randomGrouping[index]
            print(String(format: "A random grouping of the token types into bands of the same sizes gives %.4f ± %.4f bits "
                         + "(max %.4f, %d draws; p = %.3g)", g.mean, g.standardDeviation, g.maximum, g.draws, g.pValue))
        }
        if let c = l.conditionalTest {
            print("I(\(labelTitle.lowercased()); expert | token) = \(c.summary): what the \(labelTitle.lowercased()) adds to the token")
        }
        if characteristicTokens {
            print("Most characteristic tokens (lift over the expert's base rate, tokens seen ≥ \(minimumCount) times):")
        }
        for (expert, list) in l.characteristicTokens.enumerated() where characteristicTokens && !list.isEmpty {
            let base = l.table.expertShares[expert]
            print(String(format: "  E%d (%.0f%% of tokens): ", expert, 100 * base)
                  + list.map { "\"\(TokenRoutingChart.visible(decode($0.token), limit: 12))\" "
                              + String(format: "%.1f× (%d/%d)", $0.lift, $0.routedHere, $0.occurrences) }.joined(separator: ", "))
        }
        print("")
    }
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

/// I(band; expert) when each vocabulary entry's band is shuffled: the chance
/// level of "any grouping of the token types", for the frequency bands.
struct GroupingNull {
    var mean: Double, standardDeviation: Double, maximum: Double
    var atLeastObserved: Int, draws: Int
    var pValue: Double { Double(1 + atLeastObserved) / Double(1 + draws) }
    var json: [String: Any] {
        ["chance_mi_bits": mean, "chance_mi_std_bits": standardDeviation, "chance_mi_max_bits": maximum,
         "p_value": pValue, "draws": draws]
    }
}
