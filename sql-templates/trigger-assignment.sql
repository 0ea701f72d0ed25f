  IF NOT {{isPseudonym}} THEN
    SELECT {{digest}} INTO digest
    {{keySelection}};
    IF digest IS NULL OR NEW.{{timeColumn}} IS NULL THEN
      NEW.{{column}} := {{schema}}.pseudonym(NEW.{{column}}, NEW.{{timeColumn}});
    ELSE
      NEW.{{column}} := {{uuid}};
    END IF;
  END IF;
