// AnalysisCommands: the parts of `route` and `specialize` that do not depend on
// which model is read — shared by `gpt-moe` (a checkpoint trained here) and
// `pretrained-moe` (a Hugging Face checkpoint), so the two print the same
// statistics the same way from one implementation.
//
//     DomainFolder.load      one UTF-8 text file per domain → token ids   [R][N_r]
//     RoutingGrid            the terminal grid of top-1 experts, 80 columns
//     SpecializationRun      route every domain, then per MoE layer:
//                              domain × expert (Specialization.analyse, with I(· | token))
//                              token × expert   (I(token; expert), for scale)
//                              band × expert    (FrequencyBands from a token source)
//                              random groupings of the token types (PermutationTest.typeGrouping)
//     SpecializationRun.printReport   the tables, MI beside chance, lift
//
// A command only chooses the model, the tokenizer and where the frequencies come
// from (the training text for gpt-moe; the domains text itself for a pretrained
// model, whose training data is not at hand). Notebooks/part6-specialization.md
// reads the output; part 5, §9 runs it on the pretrained fixtures.
//
// Legend: N tokens, R domains, L MoE layers, E experts, B frequency bands.
import Foundation

/// A bad `--domains` folder or file: one line naming it.
public struct AnalysisInputError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One domain: its name (the file name without extension) and its tokens.
public struct DomainText {
    public let name: String
    public let ids: [Int]
    public init(name: String, ids: [Int]) { self.name = name; self.ids = ids }
}

public enum DomainFolder {
    /// Every regular, non-hidden file of `path`, by name, each encoded with `encode`.
    /// Throws (one line naming the folder or file) when the folder is missing, a file
    /// is unreadable, not UTF-8 or empty, or there are fewer than two domains.
    public static func load(_ path: String, encode: (String) -> [Int]) throws -> [DomainText] {
        let folder = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AnalysisInputError("\(folder.path): no such folder (--domains wants a folder with one UTF-8 text file per domain)")
        }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
            .filter { !$0.hasPrefix(".") }.sorted()
        var domains: [DomainText] = []
        for name in names {
            let url = folder.appendingPathComponent(name)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue else { continue }
            guard let data = try? Data(contentsOf: url) else { throw AnalysisInputError("\(url.path): cannot be read") }
            guard let text = String(data: data, encoding: .utf8) else { throw AnalysisInputError("\(url.path): not valid UTF-8 text") }
            let ids = text.isEmpty ? [] : encode(text)
            guard !ids.isEmpty, !text.isEmpty else { throw AnalysisInputError("\(url.path): empty (a domain needs some text)") }
            domains.append(DomainText(name: (name as NSString).deletingPathExtension, ids: ids))
        }
        guard !domains.isEmpty else {
            throw AnalysisInputError("\(folder.path): no domain files (expected one UTF-8 text file per domain)")
        }
        guard domains.count >= 2 else {
            throw AnalysisInputError("\(folder.path): only one domain file (\(domains[0].name)); a comparison needs two or more")
        }
        return domains
    }
}

/// 1234567 → "1,234,567".
func groupedDigits(_ n: Int) -> String {
    let s = String(n)
    var out = ""
    for (i, c) in s.reversed().enumerated() { if i > 0 && i % 3 == 0 && c != "-" { out.append(",") }; out.append(c) }
    return String(out.reversed())
}

/// The routing as text: rows of tokens, under each the top-1 expert in every
/// MoE layer, wrapped to fit 80 columns; on a terminal each expert number has
/// a background colour of its own, so runs of one expert show at a glance.
public struct RoutingGrid {
    public let routing: TokenRouting
    public let colour: Bool
    /// What a row is called: "block" (gpt-moe's transformer blocks) or "layer".
    public let layerName: String
    public let width = 80

    public init(routing: TokenRouting, colour: Bool, layerName: String = "block") {
        self.routing = routing
        self.colour = colour
        self.layerName = layerName
    }

    /// ANSI 256-colour backgrounds, the Okabe–Ito hues of the SVG where the palette has them.
    static let palette = [32, 166, 36, 175, 178, 74, 227, 245, 90, 130, 22, 160, 25, 214, 99, 58]

    public func render() -> String {
        let e = max(routing.expertCount, 1)
        let tokens = routing.tokens.map { TokenRoutingChart.visible($0, limit: 5) }
        let cell = max(tokens.map(\.count).max() ?? 1, String(e - 1).count) + 1
        let label = max(6, routing.layers.map { "\(layerName) \($0.layer)".count }.max() ?? 6) + 1
        let perLine = max(1, (width - label) / cell)
        func pad(_ s: String, _ w: Int) -> String { s + String(repeating: " ", count: max(0, w - s.count)) }
        var lines: [String] = []
        var start = 0
        while start < tokens.count {
            let range = start..<min(tokens.count, start + perLine)
            let header = pad("token", label) + range.map { pad(tokens[$0], cell) }.joined()
            lines.append(String(header.reversed().drop(while: { $0 == " " }).reversed()))
            for layer in routing.layers {
                var row = pad("\(layerName) \(layer.layer)", label)
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

/// Everything `specialize` computes for one model and one domains folder.
public struct SpecializationRun {
    public let domains: [DomainText]
    public let expertCount: Int
    /// Per MoE layer, the routing of all domains' tokens, domain after domain.   [L] of [N]
    public let layers: [TokenRouting.Layer]
    /// The N token ids, domain after domain.
    public let ids: [Int]
    public let bands: FrequencyBands
    public let byDomain: [LayerSpecialization]
    public let byBand: [LayerSpecialization]
    /// Distinct token ids among the N.
    public let distinctTokens: Int
    /// Per layer, I(token; expert) beside its chance level.   [L]
    public let byToken: [PermutationTest]
    /// Per layer, I(band; expert) for random groupings of the token types.   [L]
    public let randomGrouping: [PermutationTest]

    /// Routes every domain through `model` (in pieces of its context, `routeStream`)
    /// and runs the statistics. Seeds: domains `seed`, bands `seed + 1000`, token
    /// `seed + 2000 + layer`, random groupings `seed + 4000 + layer`.
    ///
    /// - Parameter groupSeenTypesOnly: the random groupings shuffle the bands of
    ///   the token types that occur in the domains only, rather than of the whole
    ///   vocabulary. For a pretrained vocabulary (50k entries, a few thousand in the
    ///   text) shuffling all of them would put nearly every seen token into the
    ///   band of the unseen ones and make the null far too easy to beat.
    public init(model: some RoutedModel, domains: [DomainText], bands: FrequencyBands, permutations: Int = 1000,
                seed: UInt64 = 0, topTokens: Int = 5, minimumCount: Int = 5, batch: Int = 16,
                groupSeenTypesOnly: Bool = false) {
        let e = model.routedExpertCount
        var ids: [Int] = [], domainLabels: [Int] = []
        var layers: [TokenRouting.Layer] = []
        for (d, domain) in domains.enumerated() {
            let routed = model.routeStream(domain.ids, batch: batch)
            if layers.isEmpty { layers = routed.map { TokenRouting.Layer(layer: $0.layer, experts: [], weights: []) } }
            for i in layers.indices { layers[i].experts += routed[i].experts; layers[i].weights += routed[i].weights }
            ids += domain.ids
            domainLabels += [Int](repeating: d, count: domain.ids.count)
        }
        let bandLabels = ids.map { bands.bandOfToken[$0] }
        let byDomain = Specialization.analyse(layers: layers, tokenIds: ids, labels: domainLabels, labelCount: domains.count,
                                              expertCount: e, permutations: permutations, seed: seed,
                                              topTokens: topTokens, minimumCount: minimumCount, conditionOnToken: true)
        // For scale: what the expert says about the token itself (ids made compact: 0..<distinct).
        let distinct = Array(Set(ids)).sorted()
        let compact = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($1, $0) })
        let tokenLabels = ids.map { compact[$0]! }
        let byToken = layers.enumerated().map { i, l in
            PermutationTest.mutualInformation(labels: tokenLabels, experts: l.topExperts, labelCount: distinct.count,
                                              expertCount: e, permutations: permutations, seed: seed &+ 2000 &+ UInt64(i))
        }
        let byBand = Specialization.analyse(layers: layers, tokenIds: ids, labels: bandLabels, labelCount: bands.bandCount,
                                            expertCount: e, permutations: permutations, seed: seed &+ 1000,
                                            topTokens: topTokens, minimumCount: minimumCount)
        // The stricter null for "frequency lines": the router sorts tokens by their
        // identity anyway (I(token; expert) above), so any grouping of the token
        // types carries some information about the expert; frequency matters only
        // if the real bands beat random groupings of the types (PermutationTest.typeGrouping).
        // With `groupSeenTypesOnly` the groupings are drawn over the types that occur:
        // tokens renumbered 0..<distinct, each keeping its band.
        let (groupTokens, groupLabels) = groupSeenTypesOnly
            ? (tokenLabels, distinct.map { bands.bandOfToken[$0] })
            : (ids, bands.bandOfToken)
        let randomGrouping = layers.enumerated().map { i, l in
            PermutationTest.typeGrouping(tokens: groupTokens, labelOfType: groupLabels, experts: l.topExperts,
                                         labelCount: bands.bandCount, expertCount: e, permutations: min(permutations, 200),
                                         seed: seed &+ 4000 &+ UInt64(i))
        }
        self.domains = domains
        self.expertCount = e
        self.layers = layers
        self.ids = ids
        self.bands = bands
        self.byDomain = byDomain
        self.byBand = byBand
        self.distinctTokens = distinct.count
        self.byToken = byToken
        self.randomGrouping = randomGrouping
    }

    /// The report after the command's own header: I(token; expert) for scale, then
    /// the domain tables and the band tables (`layerName`: "block" or "layer").
    public func printReport(decode: (Int) -> String, minimumCount: Int, layerName: String = "block") {
        print("For scale, what the top-1 expert says about the token itself: "
              + zip(layers, byToken).map { "\(layerName) \($0.layer) I(token; expert) = \($1.summary)" }.joined(separator: "; "))
        print("")
        Self.report(byDomain, labelNames: domains.map(\.name), labelTitle: "Domain", decode: decode,
                    minimumCount: minimumCount, layerName: layerName)
        Self.report(byBand, labelNames: bands.names, labelTitle: "Band", decode: decode, minimumCount: minimumCount,
                    characteristicTokens: false,   // the same tokens as above: lift does not depend on the label
                    randomGrouping: randomGrouping, layerName: layerName)
    }

    /// Per MoE layer: the share table, the mutual information beside its chance level, the characteristic tokens.
    public static func report(_ layers: [LayerSpecialization], labelNames: [String], labelTitle: String,
                              decode: (Int) -> String, minimumCount: Int, characteristicTokens: Bool = true,
                              randomGrouping: [PermutationTest] = [], layerName: String = "block") {
        guard let first = layers.first else { return }
        let e = first.table.expertCount
        for (index, l) in layers.enumerated() {
            print("\(labelTitle) × expert, MoE \(layerName) \(l.layer): share of each \(labelTitle.lowercased())'s tokens per top-1 expert")
            var table = TextTable(headers: [labelTitle, "Tokens"] + (0..<e).map { "E\($0)" })
            for (r, name) in labelNames.enumerated() {
                table.addRow([name, groupedDigits(l.table.labelTotals[r])] + l.table.rowShares[r].map { String(format: "%.0f%%", 100 * $0) })
            }
            table.addRow(["all", groupedDigits(l.table.total)] + l.table.expertShares.map { String(format: "%.0f%%", 100 * $0) })
            print(table.render())
            print(String(format: "I(%@; expert) = ", labelTitle.lowercased()) + l.test.summary
                  + String(format: "; of at most H(%@) = %.3f bits", labelTitle.lowercased(), l.table.labelEntropyBits))
            if index < randomGrouping.count {
                let g = randomGrouping[index]
                print(String(format: "A random grouping of the token types into bands of the same sizes gives %.4f ± %.4f bits "
                             + "(max %.4f, %d draws; p = %.3g)", g.chanceBits, g.chanceStandardDeviationBits, g.chanceMaximumBits,
                             g.permutations, g.pValue))
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

    /// The specialization.json object's statistics (the command adds its own header fields).
    public func json(decode: (Int) -> String) -> [String: Any] {
        ["experts": expertCount,
         "domains": domains.map { ["name": $0.name, "tokens": $0.ids.count] as [String: Any] },
         "by_domain": byDomain.map { $0.json(labelNames: domains.map(\.name), decode: decode) },
         "by_frequency_band": zip(byBand, randomGrouping).map { band, grouping -> [String: Any] in
             var j = band.json(labelNames: bands.names, decode: decode)
             j["random_type_grouping"] = grouping.json   // chance_* over shuffled band-of-type assignments
             return j
         },
         "token_mutual_information": zip(layers, byToken).map { l, t -> [String: Any] in
             ["layer": l.layer, "distinct_tokens": distinctTokens, "mutual_information": t.json]
         }]
    }
}
