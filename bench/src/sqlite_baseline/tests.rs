/// The baseline binds `$n` by name; every statement it runs numbers its
/// parameters from `$1` without gaps.
#[test]
fn the_baselines_statements_number_their_parameters_from_one() {
    for sql in [
        super::sql::GET_CONTACT_CHECKED,
        super::sql::INSERT_CONTACT,
        super::sql::INSERT_CHANGE,
        super::sql::UPDATE_CONTACT_IF_REVISION,
    ] {
        let highest = (1..20).rev().find(|n| sql.contains(&format!("${n}")));
        let highest = highest.expect("parameters");
        for n in 1..=highest {
            assert!(sql.contains(&format!("${n}")), "${n} in {sql}");
        }
    }
}
