// The notebooks against the code: a derivation is only useful while it still
// describes the code beside it. These tests fail when the two drift apart.
//
//   (a) every relative link in Notebooks/*.md points at a file or folder that exists;
//   (b) every link whose whole text is a code span naming Swift code, e.g.
//       [`Linear.backward`](../Sources/MoE/Layers/Linear.swift), points at a file
//       that declares that name (`func backward`) and, when the first part is a
//       type, that type (`class Linear`, or an `extension Linear`);
//   (c) every citation in Sources of the form `Notebooks/NAME.md, §N` (also
//       `§N and §M`, `§N, §M`, `§N–§M` lists, and a bare `NAME.md, §N` when
//       Notebooks/NAME.md exists) names an existing notebook with a heading `## §N`;
//   (d) every notebook has content and at least one link into Sources.
//
// The repository root is found from this file's path (#filePath), so the tests
// read the working tree, not a copy. Each test prints what it checked.
import Foundation
import XCTest

final class NotebookReferencesTests: XCTestCase {
    // MARK: - The files

    /// Tests/MoETests/NotebookReferencesTests.swift → the package root.
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().standardizedFileURL
    static let notebooksDirectory = root.appendingPathComponent("Notebooks")
    static let sourcesDirectory = root.appendingPathComponent("Sources")

    /// Notebooks/*.md, by name, with their text.
    static func notebooks() throws -> [(name: String, text: String)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: notebooksDirectory.path)
            .filter { $0.hasSuffix(".md") }.sorted()
        return try names.map { ($0, try String(contentsOf: notebooksDirectory.appendingPathComponent($0), encoding: .utf8)) }
    }

    /// Every .swift file under Sources, as (path relative to the root, text).
    static func swiftSources() throws -> [(path: String, text: String)] {
        guard let walker = FileManager.default.enumerator(atPath: sourcesDirectory.path) else { return [] }
        var files: [(String, String)] = []
        for case let relative as String in walker where relative.hasSuffix(".swift") {
            let url = sourcesDirectory.appendingPathComponent(relative)
            files.append(("Sources/" + relative, try String(contentsOf: url, encoding: .utf8)))
        }
        return files.sorted { $0.0 < $1.0 }
    }

    // MARK: - Markdown links

    struct Link {
        let notebook: String
        let line: Int
        let text: String
        let target: String
        var location: String { "Notebooks/\(notebook):\(line)" }
        var markdown: String { "[\(text)](\(target))" }
        /// Not a web address, a mail address or an anchor in the same page.
        var isRelativePath: Bool {
            !(target.isEmpty || target.hasPrefix("#") || target.contains("://") || target.hasPrefix("mailto:"))
        }
        /// The file or folder the link points at, resolved against Notebooks/.
        var resolved: URL {
            var path = target
            if let cut = path.firstIndex(where: { $0 == "#" || $0 == "?" }) { path = String(path[..<cut]) }
            path = path.removingPercentEncoding ?? path
            return URL(fileURLWithPath: path, relativeTo: NotebookReferencesTests.notebooksDirectory).standardizedFileURL
        }
    }

    /// `[text](target)` links outside fenced code blocks, with their line numbers.
    static func links(in notebook: String, _ text: String) -> [Link] {
        // Blank out fenced code blocks, keeping the line count, so that code
        // in a notebook is never mistaken for a link.
        var inFence = false
        let lines = text.components(separatedBy: "\n").map { line -> String in
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("```") { inFence.toggle(); return "" }
            return inFence ? "" : line
        }
        let pattern = try! NSRegularExpression(pattern: #"\[([^\]\n]*)\]\(([^)\s]*)(?:\s+"[^"]*")?\)"#)
        var found: [Link] = []
        for (index, line) in lines.enumerated() {
            for m in pattern.matches(in: line, range: NSRange(line.startIndex..., in: line)) {
                found.append(Link(notebook: notebook, line: index + 1,
                                  text: String(line[Range(m.range(at: 1), in: line)!]),
                                  target: String(line[Range(m.range(at: 2), in: line)!])))
            }
        }
        return found
    }

    static func allLinks() throws -> [Link] {
        try notebooks().flatMap { links(in: $0.name, $0.text) }
    }

    // MARK: - Swift declarations

    /// The file's text without `//` and `///` comments, so that a name in a doc
    /// comment or a usage example does not count as a declaration. (The project
    /// writes no `/* */` comments; stripping those safely would need a lexer,
    /// since "/*" also occurs inside strings and paths.)
    static func codeOnly(_ swift: String) -> String {
        let comment = try! NSRegularExpression(pattern: #"//[^\n]*"#)
        return comment.stringByReplacingMatches(in: swift, range: NSRange(swift.startIndex..., in: swift), withTemplate: "")
    }

    /// Does `code` declare `name`? `init` matches an initialiser; a type name
    /// also matches an `extension` of that type.
    static func declares(_ code: String, _ name: String, asType: Bool = false) -> Bool {
        let escaped = NSRegularExpression.escapedPattern(for: name)
        let pattern: String
        if name == "init" {
            pattern = #"\binit\s*[?!]?\s*[(<]"#
        } else if asType {
            pattern = #"\b(?:class|struct|enum|protocol|typealias|actor|extension)\s+"# + escaped + #"\b"#
        } else {
            pattern = #"\b(?:func|var|let|class|struct|enum|protocol|typealias|actor|case)\s+"# + escaped + #"\b"#
        }
        let regex = try! NSRegularExpression(pattern: pattern)
        return regex.firstMatch(in: code, range: NSRange(code.startIndex..., in: code)) != nil
    }

    /// "`Linear.backward`" → ["Linear", "backward"]; "`matmul(_:_:)`" → ["matmul"].
    /// nil when the text is not one code span or is not a dotted Swift name.
    static func swiftName(in linkText: String) -> [String]? {
        guard linkText.count > 2, linkText.hasPrefix("`"), linkText.hasSuffix("`") else { return nil }
        var inner = String(linkText.dropFirst().dropLast())
        guard !inner.contains("`") else { return nil }
        if let paren = inner.firstIndex(of: "(") { inner = String(inner[..<paren]) }   // drop an argument list
        return inner.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, CharacterSet.letters.contains(first) || first == "_" else { return false }
        return s.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || $0 == "_" }
    }

    // MARK: - (a) relative links resolve

    func testRelativeLinksPointAtExistingFiles() throws {
        let links = try Self.allLinks().filter(\.isRelativePath)
        XCTAssertFalse(links.isEmpty, "no relative links found in Notebooks/*.md: is the link parser broken?")
        var broken = 0
        for link in links where !FileManager.default.fileExists(atPath: link.resolved.path) {
            broken += 1
            XCTFail("\(link.location): \(link.markdown) points at \(link.resolved.path), which does not exist")
        }
        note("NotebookReferencesTests: \(links.count) relative links in Notebooks/*.md, \(links.count - broken) resolve")
    }

    // MARK: - (b) named Swift declarations exist where the link says

    func testCodeLinksNameDeclarationsInTheirFile() throws {
        let links = try Self.allLinks().filter {
            $0.isRelativePath && $0.resolved.path.hasSuffix(".swift") && $0.text.hasPrefix("`") && $0.text.hasSuffix("`")
        }
        XCTAssertFalse(links.isEmpty, "no [`Name`](…/File.swift) links found: is the link parser broken?")
        var cache: [String: String] = [:]
        var checkedNames = 0
        for link in links {
            guard let parts = Self.swiftName(in: link.text), !parts.isEmpty, parts.allSatisfy(Self.isIdentifier) else {
                XCTFail("\(link.location): \(link.markdown): the text of a code link to a .swift file must be a Swift name such as `Type.member` or `function`")
                continue
            }
            let path = link.resolved.path
            guard let swift = cache[path] ?? (try? String(contentsOfFile: path, encoding: .utf8)).map(Self.codeOnly) else {
                XCTFail("\(link.location): \(link.markdown): cannot read \(path)")
                continue
            }
            cache[path] = swift
            let file = path.replacingOccurrences(of: Self.root.path + "/", with: "")
            let last = parts.last!, first = parts.first!
            if !Self.declares(swift, last) && !(parts.count == 1 && Self.declares(swift, last, asType: true)) {
                XCTFail("\(link.location): \(link.markdown): \(file) declares no '\(last)' (func, var, let, class, struct, enum, protocol\(last == "init" ? ", init" : ""))")
            }
            checkedNames += 1
            if parts.count > 1, first.first!.isUppercase {
                if !Self.declares(swift, first, asType: true) {
                    XCTFail("\(link.location): \(link.markdown): \(file) declares no type '\(first)' (nor an extension of it)")
                }
                checkedNames += 1
            }
        }
        note("NotebookReferencesTests: \(links.count) code links checked against \(cache.count) Swift files (\(checkedNames) names)")
    }

    // MARK: - (c) citations in the source name existing sections

    func testSourceCitationsNameExistingSections() throws {
        // Headings "## §N …" of every notebook.
        var sections: [String: Set<Int>] = [:]
        let heading = try NSRegularExpression(pattern: #"^## §(\d+)(?:[ \t]|$)"#, options: .anchorsMatchLines)
        for (name, text) in try Self.notebooks() {
            sections[name] = Set(heading.matches(in: text, range: NSRange(text.startIndex..., in: text)).map {
                Int(text[Range($0.range(at: 1), in: text)!])!
            })
        }
        // "Notebooks/part2-implementation.md, §15 and §16", "part1-foundations.md, §8 and §9", "…, §3, §5", "…, §3–§5".
        let citation = try NSRegularExpression(
            pattern: #"(Notebooks/)?([A-Za-z0-9_-]+)\.md,\s*(§\d+(?:\s*(?:,|and|&|–|-)\s*§\d+)*)"#)
        let number = try NSRegularExpression(pattern: #"§(\d+)"#)
        var citations = 0, files = Set<String>()
        for (path, text) in try Self.swiftSources() {
            for m in citation.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                let prefixed = m.range(at: 1).location != NSNotFound
                let name = String(text[Range(m.range(at: 2), in: text)!]) + ".md"
                // A bare "NAME.md, §N" is a notebook citation only if that notebook exists
                // (it is how a citation continues on the next comment line).
                guard prefixed || sections[name] != nil else { continue }
                let line = text[..<Range(m.range, in: text)!.lowerBound].filter { $0 == "\n" }.count + 1
                let list = String(text[Range(m.range(at: 3), in: text)!])
                files.insert(path)
                for n in number.matches(in: list, range: NSRange(list.startIndex..., in: list)) {
                    let section = Int(list[Range(n.range(at: 1), in: list)!])!
                    citations += 1
                    guard let headings = sections[name] else {
                        XCTFail("\(path):\(line): cites Notebooks/\(name), which does not exist")
                        continue
                    }
                    if !headings.contains(section) {
                        XCTFail("\(path):\(line): cites Notebooks/\(name), §\(section), but that notebook has no heading '## §\(section)' (it has \(headings.sorted().map { "§\($0)" }.joined(separator: ", ")))")
                    }
                }
            }
        }
        XCTAssertGreaterThan(citations, 0, "no notebook citations found in Sources: is the pattern broken?")
        note("NotebookReferencesTests: \(citations) section citations in \(files.count) Swift files under Sources, " +
              "against \(sections.values.reduce(0) { $0 + $1.count }) '## §N' headings in \(sections.count) notebooks")
    }

    // MARK: - (d) every notebook has content and points into the code

    func testEveryNotebookHasContentAndLinksIntoSources() throws {
        let all = try Self.notebooks()
        XCTAssertFalse(all.isEmpty, "no notebooks in \(Self.notebooksDirectory.path)")
        let sources = Self.sourcesDirectory.path + "/"
        for (name, text) in all {
            XCTAssertFalse(text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "Notebooks/\(name) is empty")
            let intoSources = Self.links(in: name, text).filter { $0.isRelativePath && $0.resolved.path.hasPrefix(sources) }
            XCTAssertFalse(intoSources.isEmpty, "Notebooks/\(name) has no link into Sources/")
        }
        note("NotebookReferencesTests: \(all.count) notebooks (\(all.map(\.name).joined(separator: ", "))), each non-empty with links into Sources")
    }
}
