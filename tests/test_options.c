/*
 * tests/test_options.c — the options table: every option listed once, defaults, environment
 * values, and the text and JSON listings that `numaspan config` prints.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "numaspan.h"

START_TEST(table_is_complete)
{
    unsigned n = nsp_option_count();
    ck_assert_uint_ge(n, 2);
    nsp_option_info_t o, p;
    for (unsigned i = 0; i < n; i++) {
        ck_assert_int_eq(nsp_option_get(i, &o), 0);
        ck_assert_msg(strncmp(o.name, "NSP_", 4) == 0, "%s is not an NSP_ variable", o.name);
        ck_assert_msg(o.help && strlen(o.help) > 10, "%s has no meaning written", o.name);
        ck_assert_ptr_nonnull(o.def);
        for (unsigned j = 0; j < i; j++) {
            nsp_option_get(j, &p);
            ck_assert_str_ne(o.name, p.name);
        }
    }
    ck_assert_int_eq(nsp_option_get(n, &o), -1);
    ck_assert_int_eq(nsp_option_find("NSP_NO_SUCH_OPTION", &o), -1);
}
END_TEST

START_TEST(default_and_environment)
{
    nsp_option_info_t o;
    unsetenv("NSP_TOPOLOGY");
    ck_assert_int_eq(nsp_option_find("NSP_TOPOLOGY", &o), 0);
    ck_assert_str_eq(o.value, "real");
    ck_assert_int_eq(o.from_env, 0);
    setenv("NSP_TOPOLOGY", "synthetic:pack:1 numa:1 core:2 pu:1", 1);
    ck_assert_int_eq(nsp_option_find("NSP_TOPOLOGY", &o), 0);
    ck_assert_str_eq(o.value, "synthetic:pack:1 numa:1 core:2 pu:1");
    ck_assert_int_eq(o.from_env, 1);
    /* an empty variable means the default */
    setenv("NSP_TOPOLOGY", "", 1);
    ck_assert_int_eq(nsp_option_find("NSP_TOPOLOGY", &o), 0);
    ck_assert_str_eq(o.value, "real");
}
END_TEST

/* The device heap's choice of OpenCL device (device/select.c reads it through the table): an
 * option `numaspan config` lists, empty by default (a GPU, else any device), not a variable the
 * library does not know. */
START_TEST(cl_device_is_an_option)
{
    nsp_option_info_t o;
    unsetenv("NSP_CL_DEVICE");
    ck_assert_msg(nsp_option_find("NSP_CL_DEVICE", &o) == 0, "NSP_CL_DEVICE is not in the table");
    ck_assert_str_eq(o.def, "");
    ck_assert_str_eq(o.value, "");
    ck_assert_int_eq(o.from_env, 0);
    setenv("NSP_CL_DEVICE", "NVIDIA", 1);
    ck_assert_int_eq(nsp_option_find("NSP_CL_DEVICE", &o), 0);
    ck_assert_str_eq(o.value, "NVIDIA");
    ck_assert_int_eq(o.from_env, 1);
    unsetenv("NSP_CL_DEVICE");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nsp_options_print(f, 0);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "NSP_CL_DEVICE"));
    free(buf);
}
END_TEST

START_TEST(listing_json)
{
    setenv("NSP_CACHE_GROUPING", "co\"re", 1); /* a quote must be escaped, not break the JSON */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nsp_options_print(f, 1);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "\"name\": \"NSP_TOPOLOGY\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"value\": \"co\\\"re\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"from_env\": true"));
    ck_assert_int_eq(buf[0], '[');
    free(buf);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, table_is_complete);
    tcase_add_test(tc, default_and_environment);
    tcase_add_test(tc, cl_device_is_an_option);
    tcase_add_test(tc, listing_json);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
