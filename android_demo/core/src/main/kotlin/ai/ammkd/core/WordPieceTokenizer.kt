package ai.ammkd.core

import org.json.JSONObject
import java.io.File
import java.nio.ByteBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.text.Normalizer

/**
 * A bundle's `tokenizer/settings.json` (the fields of `TokenizerSettings` in bundle/tokenizer.py):
 * BERT WordPiece with [lowercase], [stripAccents] and [chineseChars] normalisation, at most
 * [maxLength] ids per text ([cls] and [sep] included, no padding), words longer than
 * [maxInputCharsPerWord] code points become [unk], pieces after a word's first start with
 * [continuingPrefix]. [unk], [cls], [sep] and [pad] are tokens of the vocabulary.
 */
data class TokenizerSettings(
    val kind: String = "wordpiece",
    val lowercase: Boolean = true,
    val stripAccents: Boolean = true,
    val chineseChars: Boolean = true,
    val maxLength: Int = 64,
    val maxInputCharsPerWord: Int = 100,
    val continuingPrefix: String = "##",
    val unk: String = "[UNK]",
    val cls: String = "[CLS]",
    val sep: String = "[SEP]",
    val pad: String = "[PAD]",
) {
    init {
        require(kind == KIND) { "kind '$kind' is not '$KIND'" }
        require(maxLength in MIN_LENGTH..MAX_LENGTH) { "maxLength $maxLength is not in $MIN_LENGTH..$MAX_LENGTH" }
        require(maxInputCharsPerWord >= 1) { "maxInputCharsPerWord $maxInputCharsPerWord is less than 1" }
    }

    companion object {
        const val KIND = "wordpiece"

        /** Bounds of `max_length` (tokens), as bundle/tokenizer.py checks them. */
        const val MIN_LENGTH = 3
        const val MAX_LENGTH = 4096

        private val KEYS = setOf(
            "kind", "lowercase", "strip_accents", "chinese_chars", "max_length", "max_input_chars_per_word",
            "continuing_prefix", "unk", "cls", "sep", "pad",
        )

        /**
         * Parse a settings object ([where] names its file in messages). `kind` must be "wordpiece" and
         * every key one of the known fields (as the Python reader insists); absent fields take the
         * defaults. Booleans must be JSON booleans, strings strings, `max_length` an integer in
         * [MIN_LENGTH]..[MAX_LENGTH] and `max_input_chars_per_word` an integer >= 1; anything else is a
         * [BundleException.Invalid].
         */
        fun fromJson(o: JSONObject, where: String): TokenizerSettings {
            val unknown = o.keySet().filter { it !in KEYS }.sorted()
            val kind = o.opt("kind")
            if (unknown.isNotEmpty() || kind != KIND) {
                throw BundleException.Invalid(where, "not a WordPiece tokenizer this reader knows (kind $kind, unknown keys $unknown)")
            }
            fun bad(key: String, v: Any?, what: String): Nothing =
                throw BundleException.Invalid(where, "invalid tokenizer settings at $key: $v is not $what")
            fun bool(key: String, default: Boolean): Boolean = when (val v = o.opt(key)) {
                null -> default
                is Boolean -> v
                else -> bad(key, v, "true or false")
            }
            fun str(key: String, default: String): String = when (val v = o.opt(key)) {
                null -> default
                is String -> v
                else -> bad(key, v, "a string")
            }
            fun int(key: String, default: Int, min: Int, max: Int): Int = when (val v = o.opt(key)) {
                null -> default
                is Int, is Long -> (v as Number).toLong().takeIf { it in min..max }?.toInt() ?: bad(key, v, "an integer in $min..$max")
                else -> bad(key, v, "an integer in $min..$max")
            }
            val d = TokenizerSettings()
            return TokenizerSettings(
                lowercase = bool("lowercase", d.lowercase),
                stripAccents = bool("strip_accents", d.stripAccents),
                chineseChars = bool("chinese_chars", d.chineseChars),
                maxLength = int("max_length", d.maxLength, MIN_LENGTH, MAX_LENGTH),
                maxInputCharsPerWord = int("max_input_chars_per_word", d.maxInputCharsPerWord, 1, Int.MAX_VALUE),
                continuingPrefix = str("continuing_prefix", d.continuingPrefix),
                unk = str("unk", d.unk),
                cls = str("cls", d.cls),
                sep = str("sep", d.sep),
                pad = str("pad", d.pad),
            )
        }
    }
}

/**
 * The bundle's text tokenizer (bundle/tokenizer.py, docs/design.md §5.10): a query becomes token
 * ids `[cls] + pieces[: maxLength - 2] + [sep]` (1 <= size <= maxLength, not padded: the text
 * encoder takes a (1, L) int64 input, L = the returned array's size). Token id = line number of
 * [vocab] (from 0). Every step works on Unicode code points, never on UTF-16 units:
 *
 *  1. words split on the code points Python's `str.isspace()` accepts, re-joined with one space;
 *  2. BERT normalizer: drop U+0000, U+FFFD and categories Cc, Cf, Co (tab, LF, CR excepted), map
 *     White_Space to a space, put spaces around CJK ideographs, strip accents (NFD, then drop
 *     category Mn), lower-case each code point on its own (full mapping, no context rules);
 *  3. split on White_Space, every punctuation code point a word of its own;
 *  4. WordPiece, greedy longest match from the left; a word longer than `maxInputCharsPerWord`
 *     code points, or with a rest no piece matches, is `unk` as a whole;
 *  5. truncate and add [cls] and [sep].
 *
 * The reference is Hugging Face `tokenizers` (held to tests/fixtures/tokenizer_kit.json). Its
 * category tests are not the platform's: they are the frozen Unicode 8.0 tables of the
 * `unicode_categories` crate, copied below ([REMOVED], [NONSPACING_MARKS], [PUNCTUATION]) so that
 * the result does not depend on the JVM's or Android's Unicode version. NFD and lower-casing come
 * from the platform ([Normalizer], [String.lowercase]); on JDK 17 they differ from the reference
 * only on code points added after Unicode 13, none of which (nor what they map to) is in the
 * vocabulary, so the ids agree.
 *
 * Refuses (a [BundleException.Invalid] naming [where]) an empty vocabulary, empty or repeated
 * tokens, and special tokens of [settings] that the vocabulary lacks. Thread-safe after construction.
 */
class WordPieceTokenizer(vocab: List<String>, val settings: TokenizerSettings, where: String = "tokenizer") {
    private val ids: HashMap<String, Int> = HashMap(vocab.size * 2)

    init {
        if (vocab.isEmpty()) throw BundleException.Invalid(where, "the vocabulary is empty")
        vocab.forEachIndexed { i, t ->
            if (t.isEmpty()) throw BundleException.Invalid(where, "token on line ${i + 1} (id $i) is empty")
            val first = ids.put(t, i)
            if (first != null) throw BundleException.Invalid(where, "token '$t' is on lines ${first + 1} and ${i + 1}")
        }
        val missing = listOf(settings.unk, settings.cls, settings.sep, settings.pad).filter { it !in ids }
        if (missing.isNotEmpty()) throw BundleException.Invalid(where, "special tokens $missing are not in the vocabulary")
    }

    /** Number of tokens (ids are 0 until vocabSize). */
    val vocabSize: Int = vocab.size
    val unkId: Int = ids.getValue(settings.unk)
    val clsId: Int = ids.getValue(settings.cls)
    val sepId: Int = ids.getValue(settings.sep)

    /** The padding id, for callers that batch texts of different lengths ([encode] never pads). */
    val padId: Int = ids.getValue(settings.pad)

    /** One text -> ids `[cls] ... [sep]`, 2..maxLength of them (an empty text gives `[cls, sep]`). */
    fun encode(text: String): IntArray {
        val room = settings.maxLength - 2
        val pieces = IntList()
        val cps = normalize(cleanWhitespace(text.codePoints().toArray()))
        var start = 0 // current word: cps[start until i]
        var i = 0
        while (i < cps.size && pieces.size < room) {
            val cp = cps[i]
            if (cp in WHITE_SPACE || cp in PUNCTUATION) {
                if (i > start) wordPiece(cps, start, i, pieces)
                if (cp !in WHITE_SPACE && pieces.size < room) wordPiece(cps, i, i + 1, pieces)
                start = i + 1
            }
            i++
        }
        if (i > start && pieces.size < room) wordPiece(cps, start, i, pieces)
        val n = minOf(pieces.size, room)
        return IntArray(n + 2).also {
            it[0] = clsId
            System.arraycopy(pieces.data, 0, it, 1, n)
            it[n + 1] = sepId
        }
    }

    /** Step 1: Python's `" ".join(text.split())`. */
    private fun cleanWhitespace(cps: IntArray): IntArray {
        val out = IntList()
        var pending = false
        for (cp in cps) {
            if (cp in PY_WHITESPACE) {
                pending = out.size > 0
            } else {
                if (pending) out.add(SPACE)
                pending = false
                out.add(cp)
            }
        }
        return out.toArray()
    }

    /** Step 2, the BERT normalizer. */
    private fun normalize(cps: IntArray): IntArray {
        var out = IntList()
        for (cp in cps) {
            // an unpaired UTF-16 surrogate (no code point of a valid string; the reference cannot take it) is dropped too
            if (cp in REMOVED || cp in Character.MIN_SURROGATE.code..Character.MAX_SURROGATE.code) continue
            val c = if (cp in WHITE_SPACE) SPACE else cp
            if (settings.chineseChars && isChinese(c)) {
                out.add(SPACE); out.add(c); out.add(SPACE)
            } else {
                out.add(c)
            }
        }
        if (settings.stripAccents) {
            val nfd = Normalizer.normalize(String(out.data, 0, out.size), Normalizer.Form.NFD)
            out = IntList()
            nfd.codePoints().forEach { if (it !in NONSPACING_MARKS) out.add(it) }
        }
        if (settings.lowercase) {
            val lower = IntList()
            for (cp in out.toArray()) {
                when {
                    cp < 0x80 -> lower.add(if (cp in 'A'.code..'Z'.code) cp + 32 else cp)
                    // full mapping of the one code point (U+0130 -> "i" U+0307); alone, no context rule applies
                    else -> String(Character.toChars(cp)).lowercase().codePoints().forEach { lower.add(it) }
                }
            }
            out = lower
        }
        return out.toArray()
    }

    /** Step 4 for the word cps[from until to]: its piece ids (or [unkId]) appended to [out]. */
    private fun wordPiece(cps: IntArray, from: Int, to: Int, out: IntList) {
        if (to - from > settings.maxInputCharsPerWord) {
            out.add(unkId)
            return
        }
        val mark = out.size
        var start = from
        while (start < to) {
            var end = to
            var id = -1
            while (start < end) {
                val s = String(cps, start, end - start)
                id = ids[if (start == from) s else settings.continuingPrefix + s] ?: -1
                if (id >= 0) break
                end--
            }
            if (id < 0) {
                out.size = mark
                out.add(unkId)
                return
            }
            out.add(id)
            start = end
        }
    }

    /** A growable IntArray. */
    private class IntList {
        var data = IntArray(16)
        var size = 0

        fun add(v: Int) {
            if (size == data.size) data = data.copyOf(size * 2)
            data[size++] = v
        }

        fun toArray(): IntArray = data.copyOf(size)
    }

    /** Inclusive code point ranges, sorted and disjoint, from "A-B C ..." (hex). */
    private class CodePoints(spec: String) {
        private val starts: IntArray
        private val ends: IntArray

        init {
            val ranges = spec.trim().split(Regex("\\s+")).map { r ->
                val (a, b) = if ('-' in r) r.split('-') else listOf(r, r)
                a.toInt(16) to b.toInt(16)
            }
            starts = IntArray(ranges.size) { ranges[it].first }
            ends = IntArray(ranges.size) { ranges[it].second }
        }

        operator fun contains(cp: Int): Boolean {
            val i = java.util.Arrays.binarySearch(starts, cp)
            val at = if (i >= 0) i else -i - 2 // the last range starting at or before cp
            return at >= 0 && cp <= ends[at]
        }
    }

    companion object {
        /** Paths of the tokenizer files inside a bundle folder. */
        const val VOCAB_FILE = "tokenizer/vocab.txt"
        const val SETTINGS_FILE = "tokenizer/settings.json"

        private const val SPACE = 0x20

        /** Step 1: what Python's `str.split()` splits on (`str.isspace()`; bundle/tokenizer.py's WHITESPACE). */
        private val PY_WHITESPACE = CodePoints("9-D 1C-20 85 A0 1680 2000-200A 2028-2029 202F 205F 3000")

        /** Whether [cp] is a space to Python's `str.isspace()` (what `str.strip()` removes; step 1 splits on these). */
        fun isPythonSpace(cp: Int): Boolean = cp in PY_WHITESPACE

        /** White_Space (Rust's `char::is_whitespace`): mapped to a space in step 2, split on in step 3. */
        private val WHITE_SPACE = CodePoints("9-D 20 85 A0 1680 2000-200A 2028-2029 202F 205F 3000")

        // The reference's category tables (see the class comment). Each was read off Hugging Face
        // `tokenizers` 0.23.3 by running every code point through its BertNormalizer and
        // BertPreTokenizer; they are the Unicode 8.0 categories, which is why they differ from a
        // newer platform's: JDK 17 (Unicode 13) also counts as Cf U+08E2, U+110CD and U+13430-13438,
        // as Mn 272 code points added in Unicode 9-13 (U+08D3-08E1, U+1ABF-1AC0, U+1DF6-1DF9, ...),
        // as punctuation 83 more (U+2E43-2E52, U+1144B-1144F, ...), and no longer counts U+166D and
        // U+111C9 as punctuation or U+1734 and U+1171E as Mn (re-categorised in Unicode 12-14).

        /** Dropped by step 2 (U+0000, U+FFFD, Cc, Cf, Co; not tab, LF, CR). */
        private val REMOVED = CodePoints(
            """
            0-8 B-C E-1F 7F-9F AD 600-605 61C 6DD 70F 180E 200B-200F 202A-202E 2060-2064 2066-206F E000-F8FF
            FEFF FFF9-FFFB FFFD 110BD 1BCA0-1BCA3 1D173-1D17A E0001 E0020-E007F F0000-FFFFD 100000-10FFFD
            """,
        )

        /** Category Mn, dropped after NFD when accents are stripped. */
        private val NONSPACING_MARKS = CodePoints(
            """
            300-36F 483-487 591-5BD 5BF 5C1-5C2 5C4-5C5 5C7 610-61A 64B-65F 670 6D6-6DC 6DF-6E4 6E7-6E8 6EA-6ED
            711 730-74A 7A6-7B0 7EB-7F3 816-819 81B-823 825-827 829-82D 859-85B 8E3-902 93A 93C 941-948 94D
            951-957 962-963 981 9BC 9C1-9C4 9CD 9E2-9E3 A01-A02 A3C A41-A42 A47-A48 A4B-A4D A51 A70-A71 A75
            A81-A82 ABC AC1-AC5 AC7-AC8 ACD AE2-AE3 B01 B3C B3F B41-B44 B4D B56 B62-B63 B82 BC0 BCD C00 C3E-C40
            C46-C48 C4A-C4D C55-C56 C62-C63 C81 CBC CBF CC6 CCC-CCD CE2-CE3 D01 D41-D44 D4D D62-D63 DCA DD2-DD4
            DD6 E31 E34-E3A E47-E4E EB1 EB4-EB9 EBB-EBC EC8-ECD F18-F19 F35 F37 F39 F71-F7E F80-F84 F86-F87
            F8D-F97 F99-FBC FC6 102D-1030 1032-1037 1039-103A 103D-103E 1058-1059 105E-1060 1071-1074 1082
            1085-1086 108D 109D 135D-135F 1712-1714 1732-1734 1752-1753 1772-1773 17B4-17B5 17B7-17BD 17C6
            17C9-17D3 17DD 180B-180D 18A9 1920-1922 1927-1928 1932 1939-193B 1A17-1A18 1A1B 1A56 1A58-1A5E 1A60
            1A62 1A65-1A6C 1A73-1A7C 1A7F 1AB0-1ABD 1B00-1B03 1B34 1B36-1B3A 1B3C 1B42 1B6B-1B73 1B80-1B81
            1BA2-1BA5 1BA8-1BA9 1BAB-1BAD 1BE6 1BE8-1BE9 1BED 1BEF-1BF1 1C2C-1C33 1C36-1C37 1CD0-1CD2 1CD4-1CE0
            1CE2-1CE8 1CED 1CF4 1CF8-1CF9 1DC0-1DF5 1DFC-1DFF 20D0-20DC 20E1 20E5-20F0 2CEF-2CF1 2D7F 2DE0-2DFF
            302A-302D 3099-309A A66F A674-A67D A69E-A69F A6F0-A6F1 A802 A806 A80B A825-A826 A8C4 A8E0-A8F1
            A926-A92D A947-A951 A980-A982 A9B3 A9B6-A9B9 A9BC A9E5 AA29-AA2E AA31-AA32 AA35-AA36 AA43 AA4C AA7C
            AAB0 AAB2-AAB4 AAB7-AAB8 AABE-AABF AAC1 AAEC-AAED AAF6 ABE5 ABE8 ABED FB1E FE00-FE0F FE20-FE2F 101FD
            102E0 10376-1037A 10A01-10A03 10A05-10A06 10A0C-10A0F 10A38-10A3A 10A3F 10AE5-10AE6 11001
            11038-11046 1107F-11081 110B3-110B6 110B9-110BA 11100-11102 11127-1112B 1112D-11134 11173
            11180-11181 111B6-111BE 111CA-111CC 1122F-11231 11234 11236-11237 112DF 112E3-112EA 11300-11301
            1133C 11340 11366-1136C 11370-11374 114B3-114B8 114BA 114BF-114C0 114C2-114C3 115B2-115B5
            115BC-115BD 115BF-115C0 115DC-115DD 11633-1163A 1163D 1163F-11640 116AB 116AD 116B0-116B5 116B7
            1171D-1171F 11722-11725 11727-1172B 16AF0-16AF4 16B30-16B36 16F8F-16F92 1BC9D-1BC9E 1D167-1D169
            1D17B-1D182 1D185-1D18B 1D1AA-1D1AD 1D242-1D244 1DA00-1DA36 1DA3B-1DA6C 1DA75 1DA84 1DA9B-1DA9F
            1DAA1-1DAAF 1E8D0-1E8D6 E0100-E01EF
            """,
        )

        /** A word of its own in step 3: ASCII punctuation and categories Pc, Pd, Ps, Pe, Pi, Pf, Po. */
        private val PUNCTUATION = CodePoints(
            """
            21-2F 3A-40 5B-60 7B-7E A1 A7 AB B6-B7 BB BF 37E 387 55A-55F 589-58A 5BE 5C0 5C3 5C6 5F3-5F4 609-60A
            60C-60D 61B 61E-61F 66A-66D 6D4 700-70D 7F7-7F9 830-83E 85E 964-965 970 AF0 DF4 E4F E5A-E5B F04-F12
            F14 F3A-F3D F85 FD0-FD4 FD9-FDA 104A-104F 10FB 1360-1368 1400 166D-166E 169B-169C 16EB-16ED
            1735-1736 17D4-17D6 17D8-17DA 1800-180A 1944-1945 1A1E-1A1F 1AA0-1AA6 1AA8-1AAD 1B5A-1B60 1BFC-1BFF
            1C3B-1C3F 1C7E-1C7F 1CC0-1CC7 1CD3 2010-2027 2030-2043 2045-2051 2053-205E 207D-207E 208D-208E
            2308-230B 2329-232A 2768-2775 27C5-27C6 27E6-27EF 2983-2998 29D8-29DB 29FC-29FD 2CF9-2CFC 2CFE-2CFF
            2D70 2E00-2E2E 2E30-2E42 3001-3003 3008-3011 3014-301F 3030 303D 30A0 30FB A4FE-A4FF A60D-A60F A673
            A67E A6F2-A6F7 A874-A877 A8CE-A8CF A8F8-A8FA A8FC A92E-A92F A95F A9C1-A9CD A9DE-A9DF AA5C-AA5F
            AADE-AADF AAF0-AAF1 ABEB FD3E-FD3F FE10-FE19 FE30-FE52 FE54-FE61 FE63 FE68 FE6A-FE6B FF01-FF03
            FF05-FF0A FF0C-FF0F FF1A-FF1B FF1F-FF20 FF3B-FF3D FF3F FF5B FF5D FF5F-FF65 10100-10102 1039F 103D0
            1056F 10857 1091F 1093F 10A50-10A58 10A7F 10AF0-10AF6 10B39-10B3F 10B99-10B9C 11047-1104D
            110BB-110BC 110BE-110C1 11140-11143 11174-11175 111C5-111C9 111CD 111DB 111DD-111DF 11238-1123D
            112A9 114C6 115C1-115D7 11641-11643 1173C-1173E 12470-12474 16A6E-16A6F 16AF5 16B37-16B3B 16B44
            1BC9F 1DA87-1DA8B
            """,
        )

        /**
         * CJK ideographs, spaced apart in step 2: the reference's ranges. Its fifth range starts at
         * U+2B920, not U+2B820 where CJK Extension E begins, so U+2B820-2B91F stay as they are.
         */
        private fun isChinese(cp: Int): Boolean =
            cp in 0x4E00..0x9FFF || cp in 0x3400..0x4DBF || cp in 0x20000..0x2A6DF || cp in 0x2A700..0x2B73F ||
                cp in 0x2B740..0x2B81F || cp in 0x2B920..0x2CEAF || cp in 0xF900..0xFAFF || cp in 0x2F800..0x2FA1F

        /**
         * vocab.txt bytes -> tokens (id = index): UTF-8 (invalid bytes refused), split on '\n', one
         * trailing empty line dropped. A token holding '\r' (a CRLF file) is refused; empty and
         * repeated tokens are refused by the constructor. Errors are [BundleException.Invalid] naming [where].
         */
        fun readVocab(data: ByteArray, where: String): List<String> {
            val text = try {
                Charsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(data)).toString()
            } catch (e: CharacterCodingException) {
                throw BundleException.Invalid(where, "not UTF-8 ($e)")
            }
            val lines = text.split('\n').let { if (it.last().isEmpty()) it.dropLast(1) else it }
            lines.forEachIndexed { i, t ->
                if ('\r' in t) throw BundleException.Invalid(where, "line ${i + 1} holds a carriage return (one token per line, '\\n' line ends)")
            }
            return lines
        }

        /**
         * A tokenizer from checked vocabulary bytes (e.g. [Bundle.readBytes] of the manifest's entry)
         * and the settings object; [vocabWhere] and [settingsWhere] name the files in messages.
         */
        fun fromBytes(vocab: ByteArray, settingsJson: JSONObject, vocabWhere: String, settingsWhere: String): WordPieceTokenizer {
            val settings = TokenizerSettings.fromJson(settingsJson, settingsWhere)
            return WordPieceTokenizer(readVocab(vocab, vocabWhere), settings, vocabWhere)
        }

        /**
         * A tokenizer from a vocab.txt file and its settings object ([settingsWhere] names the settings
         * file in messages; by default settings.json next to [vocabFile]). A missing file is a
         * [BundleException.Missing], anything wrong with either a [BundleException.Invalid].
         */
        fun fromFiles(
            vocabFile: File,
            settingsJson: JSONObject,
            settingsWhere: String = File(vocabFile.absoluteFile.parentFile, "settings.json").path,
        ): WordPieceTokenizer {
            val where = vocabFile.path
            if (!vocabFile.isFile) throw BundleException.Missing(where, "missing (a tokenizer needs its vocab.txt)")
            if (vocabFile.length() > Limits.MAX_FILE_BYTES) {
                throw BundleException.Invalid(where, "${vocabFile.length()} bytes, more than this reader can hold in memory")
            }
            return fromBytes(vocabFile.readBytes(), settingsJson, where, settingsWhere)
        }
    }
}
