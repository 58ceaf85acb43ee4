use gantry_config::load::{LoadOptions, MemorySource};
use gantry_config::Sources;
#[test]
#[ignore]
fn stage_timing() {
    let mut yaml = String::from(
        "stages: [build, test, deploy]\nvariables:\n  GLOBAL: g\n.defaults: &defaults\n  image: alpine:3\n  tags: [docker]\n.base:\n  <<: *defaults\n  variables: {A: '1'}\n  before_script: [echo setup]\n.test:\n  extends: .base\n  stage: test\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n    - when: manual\n",
    );
    for i in 0..5000 {
        if i % 2 == 0 {
            yaml.push_str(&format!("build{i}:\n  extends: .base\n  stage: build\n  script: [make {i}]\n"));
        } else {
            yaml.push_str(&format!("test{i}:\n  extends: [.test]\n  needs: [build{}]\n  script:\n    - !reference [.base, before_script]\n    - make test {i}\n", i - 1));
        }
    }
    for _ in 0..1 {
        let t = std::time::Instant::now();
        let node = gantry_config::yaml::parse(&yaml, gantry_config::FileId(0), &Default::default()).unwrap();
        let t1 = t.elapsed();
        let src = MemorySource::single(".gitlab-ci.yml", yaml.as_str());
        let mut sources = Sources::new();
        let t = std::time::Instant::now();
        let inc = gantry_config::include::expand(&src, &LoadOptions::new(".gitlab-ci.yml"), &mut sources).unwrap();
        let t2 = t.elapsed();
        let t = std::time::Instant::now();
        let ext = gantry_config::extends::apply(inc).unwrap();
        let t3 = t.elapsed();
        let t = std::time::Instant::now();
        let r = gantry_config::reference::resolve(ext).unwrap();
        let t4 = t.elapsed();
        let t = std::time::Instant::now();
        let _c = node.clone();
        let t5 = t.elapsed();
        eprintln!("parse {t1:?} include(+parse) {t2:?} extends {t3:?} reference {t4:?} clone {t5:?} {}", r.as_map().unwrap().len());
    }
}
