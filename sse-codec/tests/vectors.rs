//! The SSE parsing vectors (`tests/fixtures/sse-vectors.json`, expectations produced by
//! browsers and parsers, following the WHATWG text where they disagree), one test per vector.
//! Each vector is decoded as its chunks were written, split at every point (a sample of points
//! for vectors over 4 KiB), and one byte at a time.

mod common;

macro_rules! vectors {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                common::check_vector($name);
            }
        )*

        #[test]
        fn every_vector_has_a_test() {
            let names = [$($name),*];
            assert_eq!(names.len(), common::vectors().len());
            for case in common::vectors() {
                assert!(names.contains(&case.name.as_str()), "no test for {}", case.name);
            }
        }
    };
}

vectors! {
    lf_basic => "lf-basic",
    crlf_basic => "crlf-basic",
    cr_basic_eof => "cr-basic-eof",
    cr_basic_more_data => "cr-basic-more-data",
    cr_two_events => "cr-two-events",
    mixed_line_endings => "mixed-line-endings",
    crlf_split_cr_lf => "crlf-split-cr-lf",
    crlf_split_blank_line => "crlf-split-blank-line",
    lf_then_cr => "lf-then-cr",
    one_byte_chunks_crlf => "one-byte-chunks-crlf",
    many_events_one_chunk => "many-events-one-chunk",
    split_mid_field_name => "split-mid-field-name",
    blank_lines_only => "blank-lines-only",
    leading_blank_lines => "leading-blank-lines",
    bom_stripped => "bom-stripped",
    bom_as_own_chunk => "bom-as-own-chunk",
    bom_twice => "bom-twice",
    bom_mid_stream => "bom-mid-stream",
    value_no_space => "value-no-space",
    value_two_spaces => "value-two-spaces",
    value_tab_kept => "value-tab-kept",
    space_before_colon => "space-before-colon",
    event_two_spaces => "event-two-spaces",
    data_no_colon => "data-no-colon",
    event_no_colon => "event-no-colon",
    id_no_colon_resets => "id-no-colon-resets",
    unknown_no_colon => "unknown-no-colon",
    comment_only => "comment-only",
    comment_bare_colon => "comment-bare-colon",
    comment_between_data => "comment-between-data",
    comment_no_space => "comment-no-space",
    comment_keepalive_stream => "comment-keepalive-stream",
    unknown_field => "unknown-field",
    unknown_field_only => "unknown-field-only",
    multi_data => "multi-data",
    data_empty_line_middle => "data-empty-line-middle",
    data_colon_nothing => "data-colon-nothing",
    data_empty_then_value => "data-empty-then-value",
    data_only_space => "data-only-space",
    data_with_colons => "data-with-colons",
    data_json => "data-json",
    data_nul => "data-nul",
    eof_no_blank_line => "eof-no-blank-line",
    eof_no_newline => "eof-no-newline",
    eof_after_complete_event => "eof-after-complete-event",
    eof_mid_field_name => "eof-mid-field-name",
    event_type_named => "event-type-named",
    event_type_reset_after_dispatch => "event-type-reset-after-dispatch",
    event_type_last_wins => "event-type-last-wins",
    event_type_empty_value => "event-type-empty-value",
    event_type_after_data => "event-type-after-data",
    event_type_message_explicit => "event-type-message-explicit",
    event_type_error => "event-type-error",
    id_basic => "id-basic",
    id_persists => "id-persists",
    id_nul_ignored => "id-nul-ignored",
    id_empty_value_resets => "id-empty-value-resets",
    id_only_block => "id-only-block",
    id_after_data => "id-after-data",
    id_last_wins => "id-last-wins",
    id_unicode => "id-unicode",
    id_no_dispatch_at_eof => "id-no-dispatch-at-eof",
    id_with_colon => "id-with-colon",
    retry_basic => "retry-basic",
    retry_non_digits_ignored => "retry-non-digits-ignored",
    retry_only_non_digits => "retry-only-non-digits",
    retry_negative => "retry-negative",
    retry_decimal => "retry-decimal",
    retry_empty => "retry-empty",
    retry_no_dispatch_needed => "retry-no-dispatch-needed",
    retry_last_wins => "retry-last-wins",
    retry_zero => "retry-zero",
    retry_unterminated_eof => "retry-unterminated-eof",
    retry_fullwidth_digits => "retry-fullwidth-digits",
    retry_trailing_space => "retry-trailing-space",
    long_data_line_100k => "long-data-line-100k",
    long_data_line_1m => "long-data-line-1m",
    long_comment => "long-comment",
    long_event_type => "long-event-type",
    long_id => "long-id",
    many_data_lines => "many-data-lines",
    many_events => "many-events",
    utf8_multibyte => "utf8-multibyte",
    utf8_split_2byte => "utf8-split-2byte",
    utf8_invalid_continuation => "utf8-invalid-continuation",
    utf8_invalid_truncated => "utf8-invalid-truncated",
    utf8_invalid_overlong => "utf8-invalid-overlong",
    utf8_invalid_ff => "utf8-invalid-ff",
    utf8_invalid_split_before_newline => "utf8-invalid-split-before-newline",
    utf8_truncated_at_eof => "utf8-truncated-at-eof",
    utf8_invalid_in_id => "utf8-invalid-in-id",
    wpt_format_comments => "wpt-format-comments",
    wpt_double_bom => "wpt-double-bom",
    wpt_id_resets => "wpt-id-resets",
    wpt_retry_bogus => "wpt-retry-bogus",
}
