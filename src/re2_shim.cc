// C interface to RE2 for the matcher module (see re2_shim.h). Every entry
// point catches all exceptions: C callers cannot unwind, and RE2 may throw
// std::bad_alloc.
#include "re2_shim.h"

#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include <re2/re2.h>

extern "C" {
#include "recoveryd/common.h" // rd_utf8_len: the one UTF-8 validator
}

struct re2_shim {
	re2::RE2 *re;
};

namespace {

void set_err(char *err, size_t errlen, const std::string &what)
{
	if (err && errlen)
		std::snprintf(err, errlen, "%s", what.c_str());
}

// Go's regexp has no \C (match any byte, even inside a UTF-8 sequence);
// RE2 has. Refuse it outside \Q...\E so both accept the same patterns.
// Inside [...] RE2 refuses it by itself.
bool has_any_byte(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\\' || i + 1 >= n)
			continue;
		if (p[i + 1] == 'C')
			return true;
		if (p[i + 1] == 'Q') {
			// Literal text up to \E (or the end): no escapes inside.
			size_t j = i + 2;
			while (j + 1 < n && !(p[j] == '\\' && p[j + 1] == 'E'))
				j++;
			i = j + 1;
			continue;
		}
		i++; // skip the escaped character, so "\\C" is '\' then 'C'
	}
	return false;
}

// Offset of the first byte that does not start a valid sequence, or n.
size_t first_invalid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t k = rd_utf8_len(s + i, n - i);
		if (k == 0)
			return i;
		i += k;
	}
	return n;
}

// Text with every invalid byte replaced by U+FFFD, one each, as Go decodes it.
std::string go_decoded(const unsigned char *s, size_t n, size_t from)
{
	std::string out(reinterpret_cast<const char *>(s), from);

	out.reserve(n + 16);
	for (size_t i = from; i < n;) {
		size_t k = rd_utf8_len(s + i, n - i);
		if (k == 0) {
			out.append("\xef\xbf\xbd");
			i++;
		} else {
			out.append(reinterpret_cast<const char *>(s + i), k);
			i += k;
		}
	}
	return out;
}

} // namespace

extern "C" struct re2_shim *re2_shim_compile(const char *pattern, size_t len, char *err,
                                              size_t errlen)
{
	struct re2_shim *h = nullptr;

	if (err && errlen)
		err[0] = '\0';
	if (!pattern) {
		set_err(err, errlen, "no pattern");
		return nullptr;
	}
	if (has_any_byte(pattern, len)) {
		set_err(err, errlen, "invalid escape sequence: \\C");
		return nullptr;
	}
	try {
		re2::RE2::Options opt;

		// Go's defaults: UTF-8, leftmost-first, '.' stops at '\n' unless
		// (?s), ^ and $ at the text's ends unless (?m), case-sensitive
		// unless (?i), Perl classes and \b always on.
		opt.set_encoding(re2::RE2::Options::EncodingUTF8);
		opt.set_posix_syntax(false);
		opt.set_longest_match(false);
		opt.set_dot_nl(false);
		opt.set_never_nl(false);
		opt.set_case_sensitive(true);
		opt.set_log_errors(false);   // errors go to the caller, not stderr
		opt.set_max_mem(RE2_SHIM_MAX_MEM);

		h = new re2_shim(); // re = nullptr until RE2 is built
		h->re = new re2::RE2(re2::StringPiece(pattern, len), opt);
		if (!h->re->ok()) {
			std::string what = h->re->error();
			const std::string &arg = h->re->error_arg();

			// error() usually names the fragment already ("missing ): (a");
			// add it when it does not.
			if (!arg.empty() && what.find(arg) == std::string::npos)
				what += ": " + arg;
			set_err(err, errlen, what);
			re2_shim_free(h);
			return nullptr;
		}
		return h;
	} catch (const std::bad_alloc &) {
		set_err(err, errlen, "out of memory");
	} catch (...) {
		set_err(err, errlen, "internal error in the regex engine");
	}
	re2_shim_free(h);
	return nullptr;
}

extern "C" enum re2_shim_result re2_shim_full_match(const struct re2_shim *h, const char *text,
                                                     size_t len)
{
	if (!h || !h->re || (!text && len))
		return RE2_SHIM_ERR;
	if (!text)
		text = "";
	try {
		const unsigned char *s = reinterpret_cast<const unsigned char *>(text);
		size_t bad = first_invalid(s, len);
		bool ok;

		if (bad == len) {
			ok = h->re->Match(re2::StringPiece(text, len), 0, len, re2::RE2::ANCHOR_BOTH,
			                  nullptr, 0);
		} else {
			std::string t = go_decoded(s, len, bad);
			ok = h->re->Match(t, 0, t.size(), re2::RE2::ANCHOR_BOTH, nullptr, 0);
		}
		return ok ? RE2_SHIM_MATCH : RE2_SHIM_NOMATCH;
	} catch (...) {
		return RE2_SHIM_ERR;
	}
}

extern "C" void re2_shim_free(struct re2_shim *h)
{
	if (!h)
		return;
	delete h->re;
	delete h;
}
