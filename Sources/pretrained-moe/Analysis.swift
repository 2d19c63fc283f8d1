// pretrained-moe route and pretrained-moe specialize: which experts a Hugging
// Face checkpoint's routers choose, token by token, and whether that follows the
// kind of text. The same code as `gpt-moe route` / `gpt-moe specialize`: the
// model only reports its routing (PretrainedModel: RoutedModel, from the Routing
// TopKGating returns in each SparseMoEBlock); the grid, the SVG, the JSON and
// every statistic are the library's (Sources/MoE/Analysis/AnalysisCommands.swift).
//
//     pretrained-moe route --model DIR --prompt "To be, or not to be" [--json] [--svg FILE]
//     pretrained-moe specialize --model DIR --domains Notebooks/domains
//
// One difference from gpt-moe: the frequency bands. gpt-moe counts tokens in
// the text the checkpoint was trained on; a pretrained model's training data is
// not at hand, so here the bands count the tokens of the domains text itself
// (and the random-grouping null shuffles only the types that occur in it).
// Notebooks/part5-pretrained.md, §9.
import Foundation
import MoE

/// Loads the model and its tokenizer, or throws the loader's one-line error.
func loadForAnalysis(_ o: Options) throws -> (model: PretrainedModel, tokenizer: HubTokenizer, directory: URL) {
    let directory = try modelDirectory(o)
    let tokenizer = try HubTokenizer.load(directory: directory)
    let model = try PretrainedModel(directory: directory)
    return (model, tokenizer, directory)
}

func runRoute(_ o: Options) throws {
    guard let prompt = o.prompt else { throw UsageError("route needs --prompt TEXT") }
    if o.json && o.svg == "-" { throw UsageError("--svg - and --json both want stdout") }
    let (model, tokenizer, directory) = try loadForAnalysis(o)
    let ids = tokenizer.encode(prompt)
    if let problem = model.routingProblem(ids, what: "--prompt") { throw AnalysisInputError(problem) }
    guard ids.count <= model.config.maxPositions else {
        throw AnalysisInputError("--prompt: \(ids.count) tokens, more than the context of \(model.config.maxPositions) positions of \(directory.path)")
    }
    let routing = model.routing(of: ids, decode: { tokenizer.decode([$0]) })
    if let svg = o.svg {
        let chart = TokenRoutingChart(title: "Top-1 expert per token and MoE layer (\(directory.lastPathComponent), \(model.config.family.rawValue))",
                                      routing: routing)
        if svg == "-" { print(chart.svg()) } else { try AtomicFile.write(Data(chart.svg().utf8), to: URL(fileURLWithPath: svg)) }
    }
    if o.json {
        let data = try JSONSerialization.data(withJSONObject: routing.json, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        return
    }
    if o.svg == "-" { return }
    let k = model.config.expertsPerToken
    print("\(ids.count) tokens through MoE layers \(routing.layers.map { String($0.layer) }.joined(separator: ", ")) "
          + "(\(routing.expertCount) experts, top-\(k)): each token's top-1 expert per layer")
    print(RoutingGrid(routing: routing, colour: MoE.ProgressBar.stdoutIsTerminal, layerName: "layer").render())
    let means = routing.layers.map { l in l.weights.map { Double($0.first ?? 0) }.reduce(0, +) / Double(ids.count) }
    print("Mean top-1 weight: " + zip(routing.layers, means).map { String(format: "layer %d %.3f", $0.layer, $1) }
        .joined(separator: ", ") + (o.svg.map { "; heatmap in \($0)" } ?? "") + " (--json: every expert and weight)")
}

func runSpecialize(_ o: Options) throws {
    guard let folder = o.domains else { throw UsageError("specialize needs --domains DIR") }
    let (model, tokenizer, directory) = try loadForAnalysis(o)
    let domains = try DomainFolder.load(folder, encode: { tokenizer.encode($0) })
    for d in domains {
        let file = "\(folder)/\(d.name)"
        if let problem = model.routingProblem(d.ids, what: file) { throw AnalysisInputError(problem) }
    }
    // The bands: token counts of the domains text itself (no training text at hand).
    let all = domains.flatMap(\.ids)
    let bands = FrequencyBands(trainingTokens: all, vocabularySize: model.config.vocabularySize, bands: o.bands)
    let run = SpecializationRun(model: model, domains: domains, bands: bands, permutations: o.permutations, seed: o.seed,
                                topTokens: o.topTokens, minimumCount: o.minimumCount, groupSeenTypesOnly: true)
    func decode(_ t: Int) -> String { tokenizer.decode([t]) }
    print("Model \(directory.path) (\(model.config.family.rawValue)): MoE layers "
          + "\(run.layers.map { String($0.layer) }.joined(separator: ", ")), \(run.expertCount) experts, "
          + "top-\(model.config.expertsPerToken); statistics of each token's top-1 expert")
    print("Domains (\(folder)): " + domains.map { "\($0.name) \($0.ids.count) tokens" }.joined(separator: ", ")
          + " (each piece of at most \(model.config.maxPositions) tokens routed as its own sequence)")
    let seen = Set(all).count
    print("Frequency bands (equal shares of the tokens of the domains text itself, not of the model's training data, "
          + "which is not at hand; \(seen) distinct tokens): "
          + zip(bands.names, bands.trainingSharePerBand).enumerated().map { b, pair in
              let types = Set(all.filter { bands.bandOfToken[$0] == b }).count
              return String(format: "%@ %d types, %.0f%% of tokens", pair.0, types, 100 * pair.1)
          }.joined(separator: "; "))
    print("")
    run.printReport(decode: decode, minimumCount: o.minimumCount, layerName: "layer")
}
