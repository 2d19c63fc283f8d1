// `pretrained-moe download REPO [--revision REV] [--to DIR]`: HubDownload with a progress bar.
import Foundation
import MoE

func runDownload(_ o: Options) throws {
    guard o.positional.count == 1, let repo = o.positional.first else {
        throw UsageError("download needs one repository name, e.g. download ibm-granite/granite-3.1-1b-a400m-instruct")
    }
    let directory = URL(fileURLWithPath: o.to ?? String(repo.split(separator: "/").last ?? Substring(repo)))
    let bar = ProgressBar()
    let files = try HubDownload.download(repo: repo, revision: o.revision, into: directory) { file, bytes, total in
        bar.show(file, bytes, total)
    }
    bar.finish()
    print("\(repo)@\(o.revision): \(files.count) files in \(directory.path)")
}

/// One line on stderr, redrawn at most ten times a second: file, bytes, percentage, bar.
final class ProgressBar {
    var last = Date.distantPast
    var file = ""

    func show(_ name: String, _ bytes: Int, _ total: Int?) {
        let now = Date()
        if name != file { if !file.isEmpty { FileHandle.standardError.write(Data("\n".utf8)) }; file = name }
        else if now.timeIntervalSince(last) < 0.1 && bytes != total { return }
        last = now
        func mb(_ n: Int) -> String { String(format: "%.1f MB", Double(n) / 1e6) }
        var line = "\r\(name)  \(mb(bytes))"
        if let total, total > 0 {
            let fraction = min(1, Double(bytes) / Double(total))
            let filled = Int(fraction * 30)
            line += " / \(mb(total))  [" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
                + "] " + String(format: "%3.0f%%", fraction * 100)
        }
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() { if !file.isEmpty { FileHandle.standardError.write(Data("\n".utf8)) } }
}
