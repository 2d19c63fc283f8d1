// pretrained-moe: run a Hugging Face MoE checkpoint (mixtral, olmoe, qwen2_moe,
// granitemoe) in pure Swift, routed by the library's TopKGating.
//
//     pretrained-moe generate --model DIR --prompt "Once upon a time" --max-tokens 64
//     pretrained-moe logits   --model DIR --ids 1,2,3          # JSON, what the tests compare
//     pretrained-moe tokenize --model DIR --text "Hello"       # {"ids": [...]}
//     pretrained-moe tokenize --model DIR --decode 1,2,3       # {"text": "..."}
//     pretrained-moe download REPO [--revision REV] [--to DIR]
//     pretrained-moe route --model DIR --prompt TEXT [--json] [--svg FILE]   # Analysis.swift
//     pretrained-moe specialize --model DIR --domains DIR
//
// Errors are one line on stderr: exit 1 for bad input files, 2 for usage.
import Foundation
import MoE

let usage = """
usage: pretrained-moe COMMAND [options]

Runs a Hugging Face mixture-of-experts checkpoint (config.json, tokenizer.json and
safetensors in F32, BF16 or F16) on the CPU. Supported model_type: \(PretrainedConfig.supportedTypes).

commands:
  generate --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P] [--seed S]
      streams the continuation, then prints prefill and decode tokens/s.
      Defaults: --max-tokens 64, --temperature 0 (greedy), --top-p 1, --seed 0.
  logits --model DIR --ids 1,2,3
      prints {"logits": [[Float]], "router_logits": [[[Float]]], "experts": [[[Int]]]}:
      logits [T][V], and per MoE layer the router logits [T][E] and chosen experts [T][K], best first.
  tokenize --model DIR (--text TEXT | --decode 1,2,3)
      prints {"ids": [Int]} (with the tokenizer's special tokens) or {"text": String}.
  download REPO [--revision REV] [--to DIR]
      fetches config.json, tokenizer.json and the safetensors shards from the Hugging Face hub
      (default --revision main, --to ./REPO-NAME), resuming partial files.
  route --model DIR --prompt TEXT [--json] [--svg FILE]
      each token's top-1 expert in every MoE layer, as a grid fitting 80 columns (coloured on a
      terminal). --json prints {"tokens": [String], "layers": [{"layer": Int, "experts": [[Int]],
      "weights": [[Float]]}]}: every chosen expert and its weight, best first. --svg FILE writes
      the token × layer heatmap (- for stdout). The prompt must fit the model's context.
  specialize --model DIR --domains DIR [--bands B] [--permutations N] [--seed S]
             [--top-tokens N] [--min-count N]
      routes every text file of DIR (one per domain, UTF-8, two or more) and prints, per MoE
      layer, each domain's share of tokens per top-1 expert, I(domain; expert) in bits beside its
      permutation chance level and p-value, I(domain; expert | token), the most characteristic
      tokens of each expert by lift, and the same for frequency bands, counted in the domains
      text itself (the model's training data is not at hand). Defaults: --bands 3,
      --permutations 1000, --seed 0, --top-tokens 5, --min-count 5. The same statistics
      and code as gpt-moe specialize.

options for every command:
  --threads N     compute threads (default: all cores)
  -h, --help      this text
"""

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("pretrained-moe: \(message)\n".utf8))
    exit(code)
}

/// JSON numbers: Swift's shortest round-trip form, which is valid JSON for finite values.
func json(_ x: Float) -> String { x.isFinite ? "\(x)" : "null" }
/// A JSON string literal (the escaping safetensors headers use too).
func jsonString(_ s: String) -> String { Safetensors.jsonString(s) }

func parseIDs(_ text: String, flag: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false)
    var ids: [Int] = []
    for p in parts {
        guard let id = Int(p.trimmingCharacters(in: .whitespaces)), id >= 0 else {
            throw UsageError("\(flag): '\(p)' is not a token id (expected comma-separated integers ≥ 0)")
        }
        ids.append(id)
    }
    guard !ids.isEmpty else { throw UsageError("\(flag): no token ids") }
    return ids
}

struct Options {
    var model: String?
    var ids: String?
    var text: String?
    var decode: String?
    var prompt: String?
    var maxTokens = 64
    var temperature: Float = 0
    var topP: Float = 1
    var seed: UInt64 = 0
    var revision = "main"
    var to: String?
    var positional: [String] = []
    // route and specialize (Analysis.swift)
    var json = false
    var svg: String?
    var domains: String?
    var bands = 3
    var permutations = 1000
    var topTokens = 5
    var minimumCount = 5
}

func parse(_ arguments: [String]) throws -> Options {
    var reader = ArgumentReader(arguments)
    var o = Options()
    while let a = reader.next() {
        switch a {
        case "--model": o.model = try reader.value(a)
        case "--ids": o.ids = try reader.value(a)
        case "--text": o.text = try reader.value(a)
        case "--decode": o.decode = try reader.value(a)
        case "--prompt": o.prompt = try reader.value(a)
        case "--max-tokens": o.maxTokens = try reader.int(a, 0...1_000_000)
        case "--temperature": o.temperature = try reader.float(a, 0...100)
        case "--top-p": o.topP = try reader.float(a, 0.000_001...1)
        case "--seed": o.seed = UInt64(try reader.int(a, 0...Int.max))
        case "--threads": Parallel.threads = try reader.int(a, 1...1024)
        case "--revision": o.revision = try reader.value(a)
        case "--to": o.to = try reader.value(a)
        case "--json": o.json = true
        case "--svg": o.svg = try reader.value(a)
        case "--domains": o.domains = try reader.value(a)
        case "--bands": o.bands = try reader.int(a, 2...100)
        case "--permutations": o.permutations = try reader.int(a, 1...1_000_000)
        case "--top-tokens": o.topTokens = try reader.int(a, 0...1000)
        case "--min-count": o.minimumCount = try reader.int(a, 1...1_000_000)
        case _ where a.hasPrefix("-"): throw UsageError("unknown option \(a)")
        default: o.positional.append(a)
        }
    }
    return o
}

func modelDirectory(_ o: Options) throws -> URL {
    guard let m = o.model else { throw UsageError("--model DIR is required") }
    return URL(fileURLWithPath: m)
}

func runLogits(_ o: Options) throws {
    guard let idsText = o.ids else { throw UsageError("logits needs --ids 1,2,3") }
    let ids = try parseIDs(idsText, flag: "--ids")
    let model = try PretrainedModel(directory: try modelDirectory(o))
    let r = try model.forward(ids)
    let v = model.config.vocabularySize, e = model.config.expertCount, k = model.config.expertsPerToken
    var out = "{\"logits\": ["
    out += (0..<ids.count).map { t in "[" + r.logits[(t * v)..<((t + 1) * v)].map(json).joined(separator: ", ") + "]" }.joined(separator: ", ")
    out += "], \"router_logits\": ["
    out += r.routerLogits.map { layer in
        "[" + (0..<ids.count).map { t in "[" + layer[(t * e)..<((t + 1) * e)].map(json).joined(separator: ", ") + "]" }.joined(separator: ", ") + "]"
    }.joined(separator: ", ")
    out += "], \"experts\": ["
    out += r.experts.map { layer in
        "[" + (0..<ids.count).map { t in "[" + layer[(t * k)..<((t + 1) * k)].map(String.init).joined(separator: ", ") + "]" }.joined(separator: ", ") + "]"
    }.joined(separator: ", ")
    out += "]}"
    print(out)
}

func runTokenize(_ o: Options) throws {
    let tokenizer = try HubTokenizer.load(directory: try modelDirectory(o))
    if let text = o.text {
        print("{\"ids\": [" + tokenizer.encode(text).map(String.init).joined(separator: ", ") + "]}")
    } else if let d = o.decode {
        let ids = try parseIDs(d, flag: "--decode")
        if let bad = ids.first(where: { $0 >= tokenizer.vocabularySize }) {
            throw UsageError("--decode: token id \(bad) is outside the vocabulary 0..<\(tokenizer.vocabularySize)")
        }
        print("{\"text\": " + jsonString(tokenizer.decode(ids)) + "}")
    } else {
        throw UsageError("tokenize needs --text TEXT or --decode 1,2,3")
    }
}

func runGenerate(_ o: Options) throws {
    guard let prompt = o.prompt else { throw UsageError("generate needs --prompt TEXT") }
    let directory = try modelDirectory(o)
    let tokenizer = try HubTokenizer.load(directory: directory)
    let model = try PretrainedModel(directory: directory)
    let ids = tokenizer.encode(prompt)
    guard !ids.isEmpty else { throw UsageError("--prompt: the prompt encodes to no tokens") }
    if let bad = ids.first(where: { $0 >= model.config.vocabularySize }) {
        throw PretrainedError(file: directory.appendingPathComponent("tokenizer.json").path,
                              problem: "gives token id \(bad), outside the model's vocabulary of \(model.config.vocabularySize)")
    }
    guard ids.count + o.maxTokens <= model.config.maxPositions + 1 else {
        throw UsageError("--max-tokens \(o.maxTokens): with the prompt's \(ids.count) tokens this exceeds the model's \(model.config.maxPositions) positions")
    }
    var sampler = TokenSampler(SamplingSettings(temperature: o.temperature, topP: o.topP, seed: o.seed))
    let out = FileHandle.standardOutput
    out.write(Data(prompt.utf8))
    let prefillStart = Date()
    var logits = try model.forward(ids, lastOnly: true).logits
    let prefillSeconds = Date().timeIntervalSince(prefillStart)
    // Stream by decoding prompt + continuation and printing what is new, so a
    // token's leading space (metaspace "▁") and multi-byte characters come out right.
    var generated: [Int] = [], printed = tokenizer.decode(ids).unicodeScalars.count
    let decodeStart = Date()
    var decodeSteps = 0
    for step in 0..<o.maxTokens {
        let next = sampler.next(logits)
        if model.config.eosTokenIDs.contains(next) { break }
        generated.append(next)
        out.write(Data(tokenizer.decodeIncrement(ids + generated, printedCount: &printed).utf8))
        if step + 1 < o.maxTokens {
            logits = try model.forward([next], lastOnly: true).logits
            decodeSteps += 1
        }
    }
    let decodeSeconds = Date().timeIntervalSince(decodeStart)
    let prefillRate = Double(ids.count) / max(prefillSeconds, 1e-9)
    let decodeRate = decodeSteps > 0 ? Double(decodeSteps) / max(decodeSeconds, 1e-9) : 0
    print("\n\nprefill: \(ids.count) tokens, \(String(format: "%.1f", prefillRate)) tokens/s; "
          + "decode: \(decodeSteps) tokens, \(String(format: "%.1f", decodeRate)) tokens/s")
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.isEmpty || arguments.contains("--help") || arguments.contains("-h") {
    print(usage)
    exit(arguments.isEmpty ? 2 : 0)
}
do {
    let command = arguments[0]
    let o = try parse(Array(arguments.dropFirst()))
    switch command {
    case "logits": try runLogits(o)
    case "tokenize": try runTokenize(o)
    case "generate": try runGenerate(o)
    case "download": try runDownload(o)
    case "route": try runRoute(o)
    case "specialize": try runSpecialize(o)
    default: throw UsageError("unknown command '\(command)' (expected generate, logits, tokenize, download, route or specialize)")
    }
} catch let e as UsageError {
    fail("\(e.description) (see --help)", code: 2)
} catch {
    fail("\(error)", code: 1)
}
